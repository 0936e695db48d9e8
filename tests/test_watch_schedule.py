"""The watcher's scheduling decisions, on a fake clock: nothing sleeps here."""

from __future__ import annotations

from reconciler.watch import Scheduler, Timing


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# Steps of 1/8 s keep the fake clock exact in binary floating point.
TIMING = Timing(interval=60.0, debounce=0.25, backoff_initial=1.0, backoff_max=30.0)


def scheduler(clock: FakeClock, timing: Timing = TIMING) -> Scheduler:
    """A scheduler whose start pass has run and succeeded; jitter drawn at its maximum."""
    schedule = Scheduler(timing, clock, rng=lambda: 1.0)
    assert schedule.due() == "start"
    assert schedule.due() is None, "the start pass is due once"
    schedule.finished(ok=True)
    return schedule


def test_the_first_pass_is_due_at_once() -> None:
    clock = FakeClock()
    schedule = Scheduler(TIMING, clock)
    assert schedule.wait() == 0.0
    assert schedule.due() == "start"


def test_a_burst_of_events_gives_one_pass_after_the_last_one() -> None:
    clock = FakeClock()
    schedule = scheduler(clock)
    for _ in range(3):
        schedule.file_event()
        clock.advance(0.125)
    assert schedule.due() is None, "still inside the debounce of the last event"
    assert schedule.wait() == 0.125
    clock.advance(0.125)
    assert schedule.due() == "file"
    assert schedule.due() is None, "the burst is one pass"
    assert schedule.wait() == 60.0 - 0.5, "back to the resync timer"


def test_a_steady_stream_of_events_cannot_postpone_the_pass_forever() -> None:
    clock = FakeClock()
    schedule = scheduler(clock)
    reasons = []
    for _ in range(12):
        schedule.file_event()
        clock.advance(0.125)
        reasons.append(schedule.due())
    # debounce 0.25 s: the limit is max(5 × 0.25 s, 1 s) = 1.25 s after the first event.
    assert reasons.index("file") == 9 and reasons.count("file") == 1


def test_the_resync_runs_an_interval_after_a_success() -> None:
    clock = FakeClock()
    schedule = scheduler(clock)
    clock.advance(59.875)
    assert schedule.due() is None
    clock.advance(0.125)
    assert schedule.due() == "interval"
    assert schedule.finished(ok=True) == 60.0


def test_retryable_failures_back_off_growing_and_a_success_resets_it() -> None:
    clock = FakeClock()
    schedule = scheduler(clock)
    delays = []
    for _ in range(7):
        delay = schedule.finished(ok=False, retryable=True)
        assert delay is not None
        delays.append(delay)
        clock.advance(delay - 0.125)
        assert schedule.due() is None, "not before the backoff ends"
        clock.advance(0.125)
        assert schedule.due() == "retry"
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0], "doubling up to backoff_max"
    assert schedule.consecutive_failures == 7

    assert schedule.finished(ok=True) == 60.0
    assert schedule.consecutive_failures == 0
    assert schedule.finished(ok=False) == 1.0, "the backoff starts again from the beginning"


def test_the_backoff_never_exceeds_the_interval() -> None:
    clock = FakeClock()
    schedule = scheduler(clock, Timing(interval=5.0, backoff_initial=1.0, backoff_max=60.0))
    delays = [schedule.finished(ok=False) for _ in range(6)]
    assert max(d for d in delays if d is not None) == 5.0


def test_jitter_keeps_half_of_the_step() -> None:
    clock = FakeClock()
    schedule = Scheduler(TIMING, clock, rng=lambda: 0.0)
    assert schedule.finished(ok=False) == 0.5
    assert schedule.finished(ok=False) == 1.0


def test_a_file_change_does_not_wait_for_the_backoff() -> None:
    clock = FakeClock()
    schedule = scheduler(clock)
    for _ in range(5):
        schedule.finished(ok=False)  # the next retry is 16 s away
    schedule.file_event()
    clock.advance(0.25)
    assert schedule.due() == "file"


def test_a_terminal_failure_waits_for_a_file_change() -> None:
    clock = FakeClock()
    schedule = scheduler(clock)
    assert schedule.finished(ok=False, retryable=False) is None
    assert schedule.wait() is None, "no timer: only a trigger ends the wait"
    clock.advance(24 * 3600)
    assert schedule.due() is None, "neither the backoff nor the resync retries it"

    schedule.file_event()
    assert schedule.wait() == 0.25
    clock.advance(0.25)
    assert schedule.due() == "file"
    schedule.finished(ok=True)
    clock.advance(60.0)
    assert schedule.due() == "interval", "a success brings the resync back"


def test_a_request_runs_at_once_even_while_waiting() -> None:
    clock = FakeClock()
    schedule = scheduler(clock)
    schedule.finished(ok=False, retryable=False)
    schedule.request("signal")
    assert schedule.wait() == 0.0
    assert schedule.due() == "signal"
    assert schedule.due() is None
