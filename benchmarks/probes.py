"""The probes of the live-state read: one help request per mount that runs an
external plugin, none for built-ins.

For each number E of demo-kv mounts (one plugin process each), next to a fixed
number of built-in mounts, measured in-process on a fresh client per run:

* the whole live-state read (catalog, entries, mount tables, identity and the
  probes, concurrently) and its requests, counted at the transport;
* the probes alone, sent as the reader sends them (concurrently, the reader's
  pool size), to show what they add.
"""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.common import RequestCounter, rounded, say, summary
from benchmarks.upgrade import mounts_memory_allows
from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.state import MAX_CONCURRENT_READS, read_live_state

BUILTIN_MOUNTS = 50


def run_probes(server: DevServer, sizes: tuple[int, ...], runs: int) -> dict[str, Any]:
    """The read with E external mounts for each E in `sizes` (capped by memory)."""
    build_plugins(server.plugin_directory)
    binary = server.plugin_directory / "demo-kv-1.0.0"
    sha256 = hashlib.sha256(binary.read_bytes()).hexdigest()
    results: list[dict[str, Any]] = []
    with Client(server.address, server.token) as client:
        client.register_plugin("secret", "demo-kv", "v1.0.0", binary.name, sha256, [], {})
        for index in range(BUILTIN_MOUNTS):
            client.enable_mount("secret", f"builtin-{index:03d}/", {"type": "kv"})
        enabled = 0
        for wanted in sizes:
            size = mounts_memory_allows(wanted) if wanted else 0
            say(f"probes: {size} demo-kv mounts next to {BUILTIN_MOUNTS} built-in mounts")
            for index in range(enabled, size):
                client.enable_mount(
                    "secret",
                    f"probed-{index:03d}/",
                    {"type": "demo-kv", "config": {"plugin_version": "v1.0.0"}},
                )
            enabled = max(enabled, size)
            results.append(_measure(server, size, runs))
    return {"builtin_mounts": BUILTIN_MOUNTS, "sizes": results}


def _measure(server: DevServer, external: int, runs: int) -> dict[str, Any]:
    reads: list[float] = []
    probes_only: list[float] = []
    requests = probes = 0
    for _ in range(runs):
        counter = RequestCounter()
        with Client(server.address, server.token, event_hooks=counter.event_hooks) as client:
            started = time.perf_counter()
            live = read_live_state(client)
            reads.append(time.perf_counter() - started)
        requests = len(counter)
        probes = sum(1 for _, _, query in counter.requests if query == "help=1")
        probed = [m for m in live.mounts if m.backend_answers is not None]
        if len(probed) != external or not all(m.backend_answers for m in probed):
            raise RuntimeError(f"expected {external} answering probed mounts, got {probed}")
        with (
            Client(server.address, server.token) as client,
            ThreadPoolExecutor(MAX_CONCURRENT_READS) as pool,
        ):
            started = time.perf_counter()
            list(pool.map(lambda m: client.probe_mount(m.kind, m.path), probed))
            probes_only.append(time.perf_counter() - started)
    return {
        "external_mounts": external,
        "requests": requests,
        "probes": probes,
        "read": summary(reads),
        "probes_only": summary(probes_only),
        "probe_ms_each": rounded(1000 * sorted(probes_only)[len(probes_only) // 2] / external, 2)
        if external
        else 0.0,
    }
