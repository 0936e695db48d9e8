"""The watch loop: one worker thread asks the scheduler, runs the pass it names, repeats.

File events (observer thread) and requests (signal handlers) only record a trigger
and wake the worker, so passes never overlap and a signal never interrupts one.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from reconciler.watch._metrics import Metrics
from reconciler.watch._observer import start_observer
from reconciler.watch._runner import ClientFactory, PassOutcome, PassRunner, WatchOptions
from reconciler.watch._schedule import Scheduler, Timing

log = logging.getLogger("reconciler.watch")

# The longest the worker sleeps without looking at the stop flag.
_POLL = 0.5


class Watcher:
    """Reconciles one desired-state file against one server, pass after pass."""

    def __init__(
        self,
        path: Path,
        client_factory: ClientFactory,
        options: WatchOptions | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.path = Path(path)
        self.options = options or WatchOptions()
        self.metrics = metrics or Metrics(self.options.interval)
        self._runner = PassRunner(
            self.path, client_factory, self.options, self.metrics, self._stopping
        )
        self._schedule = Scheduler(
            Timing(
                interval=self.options.interval,
                debounce=self.options.debounce,
                backoff_initial=self.options.backoff_initial,
                backoff_max=self.options.backoff_max,
            ),
            time.monotonic,
        )
        # Guards the scheduler against the observer thread.
        self._schedule_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._external_stop: threading.Event | None = None
        # Set by signal handlers, which must not take a lock the worker may hold.
        self._requested: str | None = None

    # --- triggers (any thread, signal handlers included) ------------------------

    def request_pass(self, reason: str = "signal") -> None:
        """Run a pass as soon as the running one (if any) ends."""
        self._requested = reason
        self._wake.set()

    def stop(self) -> None:
        """Finish the running action, then leave `run_forever`."""
        self._stop.set()
        self._wake.set()

    def file_event(self) -> None:
        """Something touched the desired file: a pass is due once the debounce expires."""
        with self._schedule_lock:
            self._schedule.file_event()
        self._wake.set()

    # --- the loop ----------------------------------------------------------------

    def run_pass(self, reason: str = "manual") -> PassOutcome:
        """One pass now, outside the schedule; never raises for a failure."""
        return self._runner.run_pass(reason)

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Run passes until `stop_event` (or `stop()`): at start, on change, on timer, on demand."""
        self._external_stop = stop_event
        observer = start_observer(self.path, self.file_event)
        try:
            while not self._stopping():
                reason = self._next_reason()
                if reason is None:
                    continue
                if reason == "file" and not self._runner.desired.content_changed():
                    log.debug("file event without a content change: no pass")
                    continue
                outcome = self.run_pass(reason)
                if outcome.stopped:
                    break
                self._scheduled(outcome)
        finally:
            if observer is not None:
                observer.stop()
                observer.join(timeout=5)
            log.info("watcher stopped")

    def _next_reason(self) -> str | None:
        """The reason of the pass due now, or None after waiting (at most _POLL) for one."""
        requested, self._requested = self._requested, None
        with self._schedule_lock:
            if requested is not None:
                self._schedule.request(requested)
            reason = self._schedule.due()
            wait = self._schedule.wait()
        if reason is None:
            self._wake.wait(timeout=_POLL if wait is None else min(wait, _POLL))
            self._wake.clear()
        return reason

    def _scheduled(self, outcome: PassOutcome) -> None:
        with self._schedule_lock:
            delay = self._schedule.finished(ok=outcome.ok, retryable=outcome.retryable)
            failures = self._schedule.consecutive_failures
        if outcome.ok:
            return
        if delay is None:
            log.warning(
                "retrying cannot help: waiting for %s to change (or SIGHUP)",
                self.path,
                extra={"fields": {"failures": failures}},
            )
            return
        log.info(
            "next attempt in %.1fs",
            delay,
            extra={"fields": {"retry_in": round(delay, 3), "failures": failures}},
        )

    def _stopping(self) -> bool:
        external = self._external_stop
        return self._stop.is_set() or (external is not None and external.is_set())
