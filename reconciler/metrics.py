"""Watch-mode metrics (Prometheus text format) and the health check, over stdlib HTTP.

The exposition format is small enough to write by hand, which keeps the
daemon free of a metrics dependency. Everything here is process-local state
updated by the watcher's single worker and read by the HTTP thread.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from reconciler.plan import ActionKind

log = logging.getLogger(__name__)

# Failed passes in a row after which /healthz answers 503.
UNHEALTHY_AFTER_FAILURES = 3
# /healthz answers 503 when no pass succeeded for this many intervals.
UNHEALTHY_AFTER_INTERVALS = 2.0

_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class Health:
    """The answer of /healthz: healthy or not, and why."""

    healthy: bool
    reason: str
    consecutive_failures: int
    seconds_since_success: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "reason": self.reason,
            "consecutive_failures": self.consecutive_failures,
            "seconds_since_success": (
                None if self.seconds_since_success is None else round(self.seconds_since_success, 3)
            ),
        }


class Metrics:
    """Counters and gauges of one watcher process; thread-safe."""

    def __init__(
        self,
        interval: float,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._started = monotonic()
        self._passes = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._actions = dict.fromkeys((kind.value for kind in ActionKind), 0)
        self._destructive_skipped = 0
        self._destructive_pending = 0
        self._drift = 0
        self._rollbacks = 0
        self._last_success_wall: float | None = None
        self._last_success_monotonic: float | None = None
        self._last_duration = 0.0
        self._generation = 0
        self._desired_valid = 1
        self._held = 0

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
    ) -> None:
        """Account for one completed pass."""
        with self._lock:
            self._passes += 1
            self._last_duration = duration
            for kind in applied_kinds:
                self._actions[kind] = self._actions.get(kind, 0) + 1
            self._destructive_skipped += destructive_skipped
            self._destructive_pending = destructive_skipped
            self._drift += int(drift)
            self._rollbacks += rollbacks
            self._held = held
            if ok:
                self._consecutive_failures = 0
                self._last_success_wall = self._wall_clock()
                self._last_success_monotonic = self._monotonic()
            else:
                self._failures += 1
                self._consecutive_failures += 1

    def desired_loaded(self, generation: int, valid: bool) -> None:
        """The generation of the desired state in force and whether the file on disk is valid."""
        with self._lock:
            self._generation = generation
            self._desired_valid = int(valid)

    # --- reads (the HTTP thread) --------------------------------------------------

    def health(self) -> Health:
        """200 while passes succeed; 503 after 3 failures in a row or 2 intervals without one."""
        with self._lock:
            now = self._monotonic()
            failures = self._consecutive_failures
            last = self._last_success_monotonic
        since = None if last is None else now - last
        window = UNHEALTHY_AFTER_INTERVALS * self.interval
        if failures >= UNHEALTHY_AFTER_FAILURES:
            return Health(False, f"{failures} failed passes in a row", failures, since)
        if since is None:
            if now - self._started > window:
                return Health(
                    False, f"no pass succeeded since start ({window:g}s ago)", failures, since
                )
            return Health(True, "starting", failures, since)
        if since > window:
            return Health(False, f"no pass succeeded for {since:.0f}s", failures, since)
        return Health(True, "last pass succeeded" if failures == 0 else "retrying", failures, since)

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        with self._lock:
            lines: list[str] = []
            _metric(lines, "reconciler_passes_total", "counter", "Completed passes.", self._passes)
            _metric(
                lines,
                "reconciler_pass_failures_total",
                "counter",
                "Passes that did not converge (server unreachable, plan errors, failed verify).",
                self._failures,
            )
            lines.append("# HELP reconciler_actions_total Actions applied, by kind.")
            lines.append("# TYPE reconciler_actions_total counter")
            for kind in sorted(self._actions):
                lines.append(f'reconciler_actions_total{{kind="{kind}"}} {self._actions[kind]}')
            _metric(
                lines,
                "reconciler_destructive_skipped_total",
                "counter",
                "Destructive actions skipped (no --allow-destroy, or over max_destroy), per pass.",
                self._destructive_skipped,
            )
            _metric(
                lines,
                "reconciler_destructive_pending",
                "gauge",
                "Destructive actions the last pass skipped.",
                self._destructive_pending,
            )
            _metric(
                lines,
                "reconciler_drift_detected_total",
                "counter",
                "Passes that found work although the desired file had not changed.",
                self._drift,
            )
            _metric(
                lines,
                "reconciler_rollbacks_total",
                "counter",
                "Mounts rolled back after a failed upgrade.",
                self._rollbacks,
            )
            _metric(
                lines,
                "reconciler_held_upgrades",
                "gauge",
                "Failed upgrades set aside until the desired file changes.",
                self._held,
            )
            _metric(
                lines,
                "reconciler_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the last successful pass (0: none yet).",
                self._last_success_wall or 0.0,
            )
            _metric(
                lines,
                "reconciler_last_pass_duration_seconds",
                "gauge",
                "Duration of the last completed pass.",
                self._last_duration,
            )
            _metric(
                lines,
                "reconciler_desired_generation",
                "gauge",
                "Increments each time a new valid content of the desired file takes effect.",
                self._generation,
            )
            _metric(
                lines,
                "reconciler_desired_file_valid",
                "gauge",
                "1 when the file on disk is valid; 0 when the last good content is in force.",
                self._desired_valid,
            )
            _metric(
                lines,
                "reconciler_consecutive_failures",
                "gauge",
                "Failed passes since the last success.",
                self._consecutive_failures,
            )
        return "\n".join(lines) + "\n"


def _metric(lines: list[str], name: str, kind: str, help_text: str, value: float) -> None:
    lines.append(f"# HELP {name} {help_text}")
    lines.append(f"# TYPE {name} {kind}")
    lines.append(f"{name} {_number(value)}")


def _number(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class MetricsServer:
    """`/metrics` and `/healthz` on a background thread; `close()` stops it."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = _handler_for(metrics)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="reconciler-metrics", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def port(self) -> int:
        return self.address[1]

    def start(self) -> MetricsServer:
        self._thread.start()
        host, port = self.address
        log.info("serving /metrics and /healthz on http://%s:%d", host, port)
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _handler_for(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "reconciler"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, _CONTENT_TYPE, metrics.render())
            elif path == "/healthz":
                health = metrics.health()
                self._answer(
                    200 if health.healthy else 503,
                    "application/json",
                    json.dumps(health.to_dict()) + "\n",
                )
            else:
                self._answer(
                    404, "text/plain; charset=utf-8", "not found: try /metrics or /healthz\n"
                )

        def _answer(self, status: int, content_type: str, body: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            # Scrapes every few seconds would drown the reconcile log.
            log.debug("metrics: " + format, *args)

    return Handler
