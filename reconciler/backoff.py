"""Exponential backoff with jitter: one formula for the client's retries and the watcher."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(
    attempt: int, *, initial: float, cap: float, rng: Callable[[], float] = random.random
) -> float:
    """Seconds to wait after failure number `attempt` (1 = the first).

    The step doubles from `initial` up to `cap`; equal jitter keeps half of it fixed and
    draws the other half, so many clients spread out but none retries at once. The jitter
    needs no cryptographic randomness.
    """
    step = min(cap, initial * 2.0 ** max(attempt - 1, 0))
    return step / 2 + rng() * step / 2
