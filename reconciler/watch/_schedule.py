"""When the next pass runs: pure decisions over an injected clock, no threads, no sleeping.

The triggers are the start, file events (debounced), the resync timer, a request
(SIGHUP) and the end of the previous pass: a success schedules the resync, a
retryable failure backs off, a terminal failure waits for the file to change.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from reconciler import defaults
from reconciler.backoff import backoff_delay

Clock = Callable[[], float]


@dataclass(frozen=True)
class Timing:
    """The scheduler's knobs, in seconds."""

    interval: float = defaults.WATCH_INTERVAL
    debounce: float = defaults.WATCH_DEBOUNCE
    backoff_initial: float = defaults.WATCH_BACKOFF_INITIAL
    backoff_max: float = defaults.WATCH_BACKOFF_MAX

    @property
    def debounce_limit(self) -> float:
        """A steady stream of events still gives a pass this long after the first one."""
        return max(5 * self.debounce, 1.0)


class Scheduler:
    """Decides the reason and time of the next pass; the caller owns threads and sleeping."""

    def __init__(
        self, timing: Timing, clock: Clock, rng: Callable[[], float] = random.random
    ) -> None:
        self.timing = timing
        self._clock = clock
        self._rng = rng
        self._requested: str | None = None
        self._first_event: float | None = None
        self._last_event: float | None = None
        # The timed pass: at start now, later the resync or the retry; None after a
        # terminal failure, which only a file change or a request ends.
        self._timer: float | None = clock()
        self._timer_reason = "start"
        self.consecutive_failures = 0

    # --- triggers ---------------------------------------------------------------------

    def file_event(self) -> None:
        """Something touched the desired file."""
        now = self._clock()
        if self._first_event is None:
            self._first_event = now
        self._last_event = now

    def request(self, reason: str) -> None:
        """A pass as soon as possible (SIGHUP), whatever the timer says."""
        self._requested = reason

    # --- decisions --------------------------------------------------------------------

    def due(self) -> str | None:
        """The reason of the pass due now, its trigger consumed; None when none is due."""
        now = self._clock()
        if self._requested is not None:
            reason, self._requested = self._requested, None
            return reason
        file_due = self._file_due()
        if file_due is not None and file_due <= now:
            self._first_event = self._last_event = None
            return "file"
        if self._timer is not None and self._timer <= now:
            self._timer = None
            return self._timer_reason
        return None

    def wait(self) -> float | None:
        """Seconds until the next pass is due (0: now); None: until a trigger arrives."""
        if self._requested is not None:
            return 0.0
        candidates = [t for t in (self._file_due(), self._timer) if t is not None]
        if not candidates:
            return None
        return max(0.0, min(candidates) - self._clock())

    def finished(self, *, ok: bool, retryable: bool = True) -> float | None:
        """Account for a finished pass; the seconds until the next timed one (None: no timer)."""
        now = self._clock()
        if ok:
            self.consecutive_failures = 0
            return self._set_timer(now, self.timing.interval, "interval")
        self.consecutive_failures += 1
        if not retryable:
            # Retrying cannot help; an edit (or a request) can.
            self._timer = None
            return None
        delay = backoff_delay(
            self.consecutive_failures,
            initial=self.timing.backoff_initial,
            cap=min(self.timing.backoff_max, self.timing.interval),
            rng=self._rng,
        )
        return self._set_timer(now, delay, "retry")

    def _set_timer(self, now: float, delay: float, reason: str) -> float:
        self._timer, self._timer_reason = now + delay, reason
        return delay

    def _file_due(self) -> float | None:
        first, last = self._first_event, self._last_event
        if first is None or last is None:
            return None
        # Trailing debounce, but a steady stream of events cannot postpone forever.
        return min(last + self.timing.debounce, first + self.timing.debounce_limit)
