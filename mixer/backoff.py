"""Capped exponential backoff with jitter, the one retry policy of every network loop (followers, stages, readers)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Backoff:
    """Capped exponential backoff with jitter: ``next()`` gives the delay before the next try."""

    base: float = 1.0  # first delay, seconds
    cap: float = 60.0  # no delay exceeds this
    factor: float = 2.0  # growth per failure (1.0: constant; use ``step`` for linear)
    step: float = 0.0  # added per failure, for linear backoff
    jitter: float = 0.1  # +/- this fraction, so reconnecting clients do not stampede
    rng: Callable[[], float] = random.random
    attempts: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * self.factor**self.attempts + self.step * self.attempts)
        self.attempts += 1
        return max(0.0, delay * (1 + self.jitter * (2 * self.rng() - 1)))

    def reset(self) -> None:
        self.attempts = 0
