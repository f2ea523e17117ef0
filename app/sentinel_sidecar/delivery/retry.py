"""The one backoff of every retry: exponential steps with equal jitter (half the step fixed, half
random), between a floor and a ceiling, its randomness injected so a test can pin it."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Backoff:
    """Attempt n (from 1) waits between half and all of `base * 2**(n-1)`, raised to `floor`
    and cut at `ceiling`. Jitter spreads the retries of a fleet that failed together."""

    base: float
    ceiling: float
    floor: float = 0.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th failure in a row."""
        step = self.base * 2.0 ** min(max(attempt, 1) - 1, 30)
        top = min(self.ceiling, max(self.floor, step))
        return self.rng.uniform(top / 2, top)
