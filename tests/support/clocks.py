"""Time and chance pinned for unit tests: a clock that moves only when slept on, and an RNG
that always picks one end of a range."""

from __future__ import annotations

import random


class Edges(random.Random):
    """`uniform(a, b)` at one end: the lowest or the highest wait the policy allows."""

    def __init__(self, high: bool) -> None:
        super().__init__()
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


class Clock:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
