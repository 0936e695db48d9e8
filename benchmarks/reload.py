"""Would concurrent reload calls shorten an upgrade's reload?

The server restarts the plugin of every mount a reload call names, one after the
other, and answers when all are up. M external mounts (demo-kv, one plugin
process each) are reloaded three ways, alternately, `runs` times:

* one call naming every mount (what the executor sends after the canary);
* the same mounts split into 2 and into 4 calls sent at the same time.

Each way restarts every plugin once. Whether the server overlaps the restarts of
concurrent calls, and whether the machine has the cores to make that pay, is the
measurement.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.common import descendants_rss, rounded, say
from benchmarks.upgrade import mounts_memory_allows
from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.loader import load_desired
from reconciler.reconcile import apply, plan_for

_DESIRED = """\
version: 1
plugin_directory: {plugins}
plugins:
  - {{type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}}
secrets:
"""
SPLITS = (1, 2, 4)


def _reload(client: Client, mounts: list[str], calls: int) -> float:
    groups = [mounts[index::calls] for index in range(calls)]
    started = time.perf_counter()
    with ThreadPoolExecutor(calls) as pool:
        for answer in [pool.submit(client.reload_backend, mounts=group) for group in groups]:
            answer.result()
    return time.perf_counter() - started


def run_reload(server: DevServer, wanted: int, workdir: Path, runs: int) -> dict[str, Any]:
    mounts = mounts_memory_allows(wanted)
    build_plugins(server.plugin_directory)
    desired = workdir / "reload.yaml"
    paths = [f"rl-{index:03d}/" for index in range(mounts)]
    desired.write_text(
        _DESIRED.format(plugins=server.plugin_directory)
        + "".join(f"  - {{path: {path}, plugin: demo-kv}}\n" for path in paths)
    )
    say(f"reload: enabling {mounts} demo-kv mounts")
    with Client(server.address, server.token) as client:
        loaded = load_desired(desired)
        result = apply(client, plan_for(client, loaded), loaded)
        if not result.converged:
            raise RuntimeError(f"setting up the mounts failed: {result.failures}")
        processes, _ = descendants_rss(server.process.pid)
        say(f"reload: {mounts} mounts in 1, 2 and 4 concurrent calls, {runs} rounds")
        samples: dict[int, list[float]] = {calls: [] for calls in SPLITS}
        for _ in range(runs):
            for calls in SPLITS:
                samples[calls].append(_reload(client, paths, calls))
        after, _ = descendants_rss(server.process.pid)
    one = statistics.median(samples[1])
    return {
        "mounts": mounts,
        "plugin_processes": processes,
        "plugin_processes_after": after,
        "rounds": runs,
        "seconds": {str(calls): [rounded(s, 2) for s in samples[calls]] for calls in SPLITS},
        "median_s": {str(calls): rounded(statistics.median(samples[calls]), 2) for calls in SPLITS},
        "per_mount_one_call_s": rounded(one / mounts),
        "speedup": {
            str(calls): rounded(one / statistics.median(samples[calls]), 2) for calls in SPLITS
        },
    }
