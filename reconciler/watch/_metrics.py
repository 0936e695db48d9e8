"""Watch-mode metrics through prometheus_client, and the health verdict of /healthz.

Each Metrics owns its registry, so that several watchers in one process (tests, a
library user) never share or clash over a metric.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from reconciler.plan import ActionKind

# Failed passes in a row after which /healthz answers 503.
UNHEALTHY_AFTER_FAILURES = 3
# /healthz answers 503 when no pass succeeded for this many intervals.
UNHEALTHY_AFTER_INTERVALS = 2.0
# Seconds; a pass is a few requests, a big upgrade with reloads can take minutes.
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

__all__ = ["CONTENT_TYPE", "Health", "Metrics"]


@dataclass(frozen=True)
class Health:
    """The answer of /healthz: healthy or not, and why."""

    healthy: bool
    reason: str
    consecutive_failures: int
    seconds_since_success: float | None
    # Upgrades held after a failure: their mounts stay off the file's version.
    held: tuple[str, ...] = ()
    # Healthy, yet mounts do not answer (named in `reason`).
    degraded: bool = False
    # Unhealthy because of the held upgrades alone (passes succeed).
    holding: bool = False

    @property
    def status(self) -> str:
        """ "ok", "degraded" (passes succeed, mounts do not answer), "held" (an upgrade is
        held) or "unhealthy"."""
        if self.healthy:
            return "degraded" if self.degraded else "ok"
        return "held" if self.holding else "unhealthy"

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "reason": self.reason,
            "held": list(self.held),
            "consecutive_failures": self.consecutive_failures,
            "seconds_since_success": (
                None if self.seconds_since_success is None else round(self.seconds_since_success, 3)
            ),
        }


class Metrics:
    """The metrics of one watcher process; updated by its worker, read by the HTTP thread."""

    def __init__(
        self,
        interval: float,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.registry = CollectorRegistry(auto_describe=True)
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._started = monotonic()
        self._consecutive = 0
        self._last_success: float | None = None
        # Mounts the last pass left without a backend ("auth/ldap/ (ldap)"), for /healthz.
        self._not_answering: tuple[str, ...] = ()
        self._held_names: tuple[str, ...] = ()

        def counter(name: str, text: str, labels: Iterable[str] = ()) -> Counter:
            return Counter(name, text, labelnames=tuple(labels), registry=self.registry)

        def gauge(name: str, text: str) -> Gauge:
            return Gauge(name, text, registry=self.registry)

        self._passes = counter("reconciler_passes", "Completed passes.")
        self._failures = counter(
            "reconciler_pass_failures",
            "Passes that did not converge (server unreachable, plan errors, failed verify).",
        )
        self._actions = counter("reconciler_actions", "Actions applied, by kind.", ["kind"])
        for kind in ActionKind:
            self._actions.labels(kind.value)  # every kind present, from 0
        self._skipped = counter(
            "reconciler_destructive_skipped",
            "Destructive actions skipped (no --allow-destroy, or over max_destroy), per pass.",
        )
        self._pending = gauge(
            "reconciler_destructive_pending", "Destructive actions the last pass skipped."
        )
        self._drift = counter(
            "reconciler_drift_detected",
            "Passes that found work although the desired file had not changed.",
        )
        self._rollbacks = counter(
            "reconciler_rollbacks", "Mounts rolled back after a failed upgrade."
        )
        self._held = gauge(
            "reconciler_held_upgrades", "Failed upgrades set aside until the desired file changes."
        )
        self._last_success_time = gauge(
            "reconciler_last_success_timestamp_seconds",
            "Unix time of the last successful pass (0: none yet).",
        )
        self._last_duration = gauge(
            "reconciler_last_pass_duration_seconds", "Duration of the last completed pass."
        )
        self._duration = Histogram(
            "reconciler_pass_duration_seconds",
            "Duration of completed passes.",
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._generation = gauge(
            "reconciler_desired_generation",
            "Increments each time a new valid content of the desired file takes effect.",
        )
        self._valid = gauge(
            "reconciler_desired_file_valid",
            "1 when the file on disk is valid; 0 when the last good content is in force.",
        )
        self._valid.set(1)
        self._consecutive_gauge = gauge(
            "reconciler_consecutive_failures", "Failed passes since the last success."
        )
        self._not_answering_gauge = gauge(
            "reconciler_mounts_not_answering",
            "Mounts (every namespace) whose backend did not answer after the last pass: a "
            "plugin that failed to start, a missing catalog entry, a built-in the server "
            "no longer ships.",
        )

    # --- updates (the watcher's worker) -----------------------------------------

    def pass_finished(
        self,
        *,
        ok: bool,
        applied_kinds: Iterable[str] = (),
        destructive_skipped: int = 0,
        drift: bool = False,
        rollbacks: int = 0,
        duration: float = 0.0,
        held: int = 0,
        not_answering: Iterable[str] | None = None,
        held_names: Sequence[str] = (),
    ) -> None:
        """Account for one completed pass; `not_answering` names the mounts it left dead
        (None: the pass did not read the server, the last count stands), `held_names` the
        held upgrades."""
        self._passes.inc()
        self._last_duration.set(duration)
        self._duration.observe(duration)
        for kind in applied_kinds:
            self._actions.labels(kind).inc()
        self._skipped.inc(destructive_skipped)
        self._pending.set(destructive_skipped)
        self._drift.inc(int(drift))
        self._rollbacks.inc(rollbacks)
        self._held.set(held)
        with self._lock:
            if not_answering is not None:
                self._not_answering = tuple(not_answering)
                self._not_answering_gauge.set(len(self._not_answering))
            self._held_names = tuple(held_names)
            if ok:
                self._consecutive = 0
                self._last_success = self._monotonic()
                self._last_success_time.set(self._wall_clock())
            else:
                self._failures.inc()
                self._consecutive += 1
            self._consecutive_gauge.set(self._consecutive)

    def desired_loaded(self, generation: int, valid: bool) -> None:
        """The generation of the desired state in force and whether the file on disk is valid."""
        self._generation.set(generation)
        self._valid.set(int(valid))

    # --- reads (the HTTP thread) --------------------------------------------------

    def health(self) -> Health:
        """200 while passes succeed; 503 after 3 failures in a row or 2 intervals without one,
        and 503 "held" while a failed upgrade is held (its mounts are not on the file's
        version, and nothing will try again until the file, entry or binary changes).

        Mounts that do not answer are named in the reason (status `degraded`), with 200: the
        watcher itself works, and restarting it (a liveness probe) would not revive them.
        """
        health = self._pass_health()
        if not health.healthy or not self._not_answering:
            return health
        dead = ", ".join(self._not_answering)
        return replace(
            health,
            degraded=True,
            reason=f"{health.reason}; {len(self._not_answering)} mount(s) do not answer: {dead}",
        )

    def _pass_health(self) -> Health:
        with self._lock:
            now = self._monotonic()
            failures = self._consecutive
            last = self._last_success
            held = self._held_names
        since = None if last is None else now - last
        window = UNHEALTHY_AFTER_INTERVALS * self.interval
        if failures >= UNHEALTHY_AFTER_FAILURES:
            return Health(False, f"{failures} failed passes in a row", failures, since, held)
        if since is None and now - self._started > window:
            reason = f"no pass succeeded since start ({window:g}s ago)"
            return Health(False, reason, failures, since, held)
        if since is not None and since > window:
            return Health(False, f"no pass succeeded for {since:.0f}s", failures, since, held)
        if held:
            reason = "held: " + "; ".join(f"upgrade to {name} failed" for name in held)
            return Health(False, reason, failures, since, held, holding=True)
        if since is None:
            return Health(True, "starting", failures, since)
        return Health(True, "last pass succeeded" if failures == 0 else "retrying", failures, since)

    def render(self) -> str:
        """The Prometheus text exposition."""
        return generate_latest(self.registry).decode()
