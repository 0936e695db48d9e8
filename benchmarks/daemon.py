"""The watch daemon over many mounts: memory over many passes, CPU while idle.

The real `Watcher`, in this process, against a no-op file of N built-in mounts:

* resident memory (VmRSS of this process) after a few passes and after many, the
  passes run one after the other as the daemon runs them (`Watcher.run_pass`);
* CPU time of the whole process (every thread: worker, file observer) while the
  loop waits for its next pass, with the interval far away.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import rounded, say
from benchmarks.noop_plan import Population, populate, write_export
from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.watch import Watcher, WatchOptions


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_daemon(
    server: DevServer, workdir: Path, mounts: int, passes: int, idle_s: float
) -> dict[str, Any]:
    early = min(10, passes)
    say(f"watch daemon: {mounts} built-in mounts, {passes} passes, then {idle_s:.0f} s idle")
    populate(server, Population(), 0, mounts)
    desired = write_export(server, workdir / f"daemon-{mounts}.yaml")
    options = WatchOptions(interval=3600.0)
    watcher = Watcher(desired, lambda: Client(server.address, server.token), options)
    rss: dict[int, int] = {}
    durations: list[float] = []
    started = time.perf_counter()
    for number in range(1, passes + 1):
        outcome = watcher.run_pass("interval")
        if not outcome.ok or outcome.applied:
            raise RuntimeError(f"pass {number} was not a no-op: {outcome.failures}")
        durations.append(outcome.duration)
        if number in (early, passes) or number % 100 == 0:
            rss[number] = resident_kib()
    elapsed = time.perf_counter() - started

    # Idle: the loop's own first pass, then nothing due for an hour.
    stop = threading.Event()
    looping = threading.Thread(target=watcher.run_forever, args=(stop,), daemon=True)
    looping.start()
    time.sleep(5.0)  # the loop starts with a pass of its own: let it end
    cpu_before, wall_before = time.process_time(), time.perf_counter()
    time.sleep(idle_s)
    cpu_idle = time.process_time() - cpu_before
    wall_idle = time.perf_counter() - wall_before
    stop.set()
    watcher.stop()
    looping.join(timeout=15)
    growth = rss[passes] / rss[early] - 1
    return {
        "mounts": mounts,
        "passes": passes,
        "passes_s": rounded(elapsed, 1),
        "pass_median_s": rounded(sorted(durations)[len(durations) // 2]),
        "rss_kib": {str(k): v for k, v in sorted(rss.items())},
        "rss_early_kib": rss[early],
        "rss_late_kib": rss[passes],
        "rss_growth": rounded(growth, 3),
        "idle_s": rounded(wall_idle, 1),
        "idle_cpu_s": rounded(cpu_idle),
        "idle_cpu_share": rounded(cpu_idle / wall_idle, 4),
    }
