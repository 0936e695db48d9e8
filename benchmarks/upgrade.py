"""Upgrading one plugin used by many mounts: demo-kv v1.0.0 → v2.0.0.

Every mount of an external plugin is a plugin process on the server (a
Python process here), so the number of mounts is capped by the memory
available. The upgrade is the README's workflow: v2 declared, v1 marked
absent, the mounts unpinned so they follow the one present version.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.common import MIB, RequestCounter, descendants_rss, meminfo, rounded, say
from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.demo.examples.plugins.build import build_plugins
from reconciler.executor import ProgressEvent
from reconciler.loader import load_desired
from reconciler.reconcile import apply, plan_for

# Resident memory to budget per external mount; measured ~50 MB, plus headroom.
_BYTES_PER_MOUNT = 80 * MIB
# Never take more than this share of the available memory.
_MEMORY_SHARE = 0.6

_HEAD = """\
version: 1
plugin_directory: {plugins}
plugins:
"""
_V1 = "  - {type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0}\n"
_V1_ABSENT = (
    "  - {type: secret, name: demo-kv, version: v1.0.0, command: demo-kv-1.0.0, state: absent}\n"
)
_V2 = "  - {type: secret, name: demo-kv, version: v2.0.0, command: demo-kv-2.0.0}\n"


def mounts_memory_allows(wanted: int) -> int:
    available = meminfo().get("MemAvailable", 0)
    if not available:
        return wanted
    return max(1, min(wanted, int(available * _MEMORY_SHARE // _BYTES_PER_MOUNT)))


def _desired(plugins: Path, entries: str, mounts: int) -> str:
    lines = "".join(f"  - {{path: up-{i:03d}/, plugin: demo-kv}}\n" for i in range(mounts))
    return _HEAD.format(plugins=plugins) + entries + "secrets:\n" + lines


def plugin_start_profile(runs: int = 3) -> dict[str, float]:
    """Seconds a plugin process spends before it can answer: interpreter + imports."""
    code = (
        "import reconciler.demo.examples.plugins.demo_kv, reconciler.demo.examples.plugins.runtime"
    )
    bare, imports = [], []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        imports.append(time.perf_counter() - started)
    return {
        "python_start_s": rounded(statistics.median(bare)),
        "python_start_and_plugin_imports_s": rounded(statistics.median(imports)),
    }


def run_upgrade(server: DevServer, wanted: int, workdir: Path) -> dict[str, Any]:
    """Enable `mounts` v1 mounts, then measure the upgrade's requests and time."""
    mounts = mounts_memory_allows(wanted)
    if mounts < wanted:
        say(f"upgrade: memory allows {mounts} external mounts, not {wanted}")
    build_plugins(server.plugin_directory)
    v1 = workdir / "upgrade-v1.yaml"
    v2 = workdir / "upgrade-v2.yaml"
    v1.write_text(_desired(server.plugin_directory, _V1, mounts))
    v2.write_text(_desired(server.plugin_directory, _V1_ABSENT + _V2, mounts))

    say(f"upgrade: enabling {mounts} demo-kv v1.0.0 mounts (one plugin process each)")
    with Client(server.address, server.token) as client:
        started = time.perf_counter()
        loaded = load_desired(v1)
        result = apply(client, plan_for(client, loaded), loaded)
        setup = time.perf_counter() - started
    if not result.converged:
        raise RuntimeError(f"setting up the v1 mounts failed: {result.failures}")
    processes, rss = descendants_rss(server.process.pid)

    say(f"upgrade: v1.0.0 → v2.0.0 on {mounts} mounts")
    counter = RequestCounter()
    per_kind: dict[str, float] = defaultdict(float)

    def progress(event: ProgressEvent) -> None:
        if event.action is not None and event.status == "done":
            per_kind[event.action.kind.value] += event.seconds

    # Default settings, as an operator runs it: a reload retried after a timeout would
    # show up in the counts.
    with Client(server.address, server.token, event_hooks=counter.event_hooks) as client:
        started = time.perf_counter()
        loaded = load_desired(v2)
        the_plan = plan_for(client, loaded)
        planned = time.perf_counter()
        result = apply(client, the_plan, loaded, progress=progress)
        finished = time.perf_counter()
    if not result.converged:
        raise RuntimeError(f"the upgrade did not converge: {result.failures}")

    kinds = counter.by_kind()
    actions = sum(per_kind.values())
    reload_s = per_kind.get("reload", 0.0)
    return {
        "mounts": mounts,
        "mounts_wanted": wanted,
        "setup_enable_s": rounded(setup),
        "setup_per_mount_s": rounded(setup / mounts),
        "plugin_processes": processes,
        "plugin_processes_rss_mib": round(rss / MIB),
        "rss_per_process_mib": round(rss / MIB / processes, 1) if processes else None,
        "plan_s": rounded(planned - started),
        "apply_s": rounded(finished - planned),
        "total_s": rounded(finished - started),
        "action_seconds": {kind: rounded(seconds) for kind, seconds in sorted(per_kind.items())},
        "verify_and_bookkeeping_s": rounded(finished - planned - actions),
        "reload_per_mount_s": rounded(reload_s / mounts),
        "plan_actions": dict(
            sorted(
                {
                    kind: sum(1 for a in the_plan.actions if a.kind.value == kind)
                    for kind in {a.kind.value for a in the_plan.actions}
                }.items()
            )
        ),
        "requests": len(counter),
        "writes": counter.writes(),
        "requests_by_kind": kinds,
        "plugin_start": plugin_start_profile(),
    }
