"""The watch loop: one worker thread asks the scheduler, runs the pass it names, repeats.

File events (observer thread) and requests (signal handlers) only record a trigger
and wake the worker, so passes never overlap and a signal never interrupts one.
"""

from __future__ import annotations

import hashlib
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
        self._file_missing = False
        self._token_digest = self._read_token_digest()

    def _read_token_digest(self) -> str | None:
        token_file = self.options.token_file
        try:
            return hashlib.sha256(token_file.read_bytes()).hexdigest() if token_file else None
        except OSError:
            return None

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
        missing = not self.path.exists()
        if missing and not self._file_missing:
            log.warning(
                "%s was deleted or moved away: the last good content stays in force; "
                "waiting for the file to come back",
                self.path,
            )
        elif self._file_missing and not missing:
            log.info("%s is back", self.path)
        self._file_missing = missing
        with self._schedule_lock:
            self._schedule.file_event()
        self._wake.set()

    def token_file_event(self) -> None:
        """The token file changed: a pass now, even after a terminal failure (an expired
        or under-privileged token replaced is the fix that failure waited for)."""
        token_file = self.options.token_file
        if token_file is None:
            return
        try:
            content = hashlib.sha256(token_file.read_bytes()).hexdigest()
        except OSError:
            return  # being replaced: the next event reads the new one
        if content == self._token_digest:
            return
        self._token_digest = content
        log.info("%s changed: a pass now", token_file)
        self.request_pass("token-file")

    # --- the loop ----------------------------------------------------------------

    def run_pass(self, reason: str = "manual") -> PassOutcome:
        """One pass now, outside the schedule; never raises for a failure."""
        return self._runner.run_pass(reason)

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Run passes until `stop_event` (or `stop()`): at start, on change, on timer, on demand."""
        self._external_stop = stop_event
        if not self.path.exists():
            self._file_missing = True
            log.warning("%s does not exist yet: waiting for it to be created", self.path)
        observer = start_observer(self.path, self.file_event)
        token_file = self.options.token_file
        token_observer = (
            start_observer(token_file, self.token_file_event) if token_file is not None else None
        )
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
            for running in (observer, token_observer):
                if running is not None:
                    running.stop()
                    running.join(timeout=5)
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
            token = f" or {self.options.token_file}" if self.options.token_file else ""
            log.warning(
                "retrying cannot help: waiting for %s%s to change (or SIGHUP)",
                self.path,
                token,
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
