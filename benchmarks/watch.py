"""Watch mode: from saving the desired file to the change applied and verified.

The real `Watcher` runs its loop in a thread, as `reconciler watch` does, with
the default debounce. The end of a pass is when its apply has been verified
(re-read, re-plan, probe), so latency = end of the pass − the save.
"""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import say, summary
from reconciler.client import Client
from reconciler.demo.devserver import DevServer
from reconciler.watch import PassOutcome, Watcher, WatchOptions

_PASS_TIMEOUT = 15.0

_DESIRED = """\
version: 1
secrets:
  - path: watched/
    plugin: kv
    config: {{default_lease_ttl: {ttl}, max_lease_ttl: 768h}}
"""


def run_watch(server: DevServer, workdir: Path, edits: int) -> dict[str, Any]:
    """`edits` saves, each changing one mount's TTL; seconds until each is verified."""
    directory = workdir / "watch"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "desired.yaml"
    path.write_text(_DESIRED.format(ttl="1h"))
    options = WatchOptions(interval=3600.0)
    watcher = Watcher(path, lambda: Client(server.address, server.token), options)
    finished: queue.Queue[tuple[float, PassOutcome]] = queue.Queue()
    run_pass = watcher.run_pass

    def timed_pass(reason: str = "manual") -> PassOutcome:
        outcome = run_pass(reason)
        finished.put((time.perf_counter(), outcome))
        return outcome

    watcher.run_pass = timed_pass  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run_forever, args=(stop,), daemon=True)
    say(f"watch: {edits} saves, each a one-mount TTL change")
    thread.start()
    latencies: list[float] = []
    passes: list[float] = []
    try:
        _wait_for_pass(finished, generation=1)
        for edit in range(edits):
            hours = edit + 2
            # Apart enough that each save is its own pass, as edits by a person are.
            time.sleep(0.3)
            saved = time.perf_counter()
            path.write_text(_DESIRED.format(ttl=f"{hours}h"))
            ended, outcome = _wait_for_pass(finished, generation=edit + 2)
            latencies.append(ended - saved)
            passes.append(outcome.duration)
            if _ttl(server) != hours * 3600:
                raise RuntimeError(f"edit {edit + 1}: the server does not have the new TTL")
    finally:
        stop.set()
        watcher.stop()
        thread.join(timeout=15)
    return {
        "edits": edits,
        "debounce_s": options.debounce,
        "save_to_verified": summary(latencies),
        "pass_duration": summary(passes),
    }


def _wait_for_pass(
    finished: queue.Queue[tuple[float, PassOutcome]], generation: int
) -> tuple[float, PassOutcome]:
    deadline = time.monotonic() + _PASS_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(f"no converged pass of generation {generation} in time")
        try:
            ended, outcome = finished.get(timeout=remaining)
        except queue.Empty:
            continue
        if not outcome.ok:
            raise RuntimeError(f"a watch pass failed: {outcome.failures}")
        if outcome.generation >= generation:
            return ended, outcome


def _ttl(server: DevServer) -> int:
    answer = httpx.get(
        f"{server.address}/v1/sys/mounts/watched/tune",
        headers={"X-Vault-Token": server.token},
        timeout=10,
    )
    answer.raise_for_status()
    return int(answer.json()["data"]["default_lease_ttl"])
