"""The one backoff, with its randomness pinned: milliseconds, no sleeping."""

import random

import pytest

from sentinel_sidecar.delivery.retry import Backoff
from sentinel_sidecar.delivery.upload import CALL_BUDGET, UploadWorker


class Edges(random.Random):
    """`uniform(a, b)` at one end: the lowest or the highest wait the policy allows."""

    def __init__(self, high: bool) -> None:
        super().__init__()
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@pytest.mark.parametrize("high", [False, True])
def test_steps_double_from_the_base_up_to_the_ceiling_with_half_of_each_as_jitter(high: bool):
    backoff = Backoff(base=0.5, ceiling=30.0, rng=Edges(high))
    tops = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    expected = tops if high else [top / 2 for top in tops]
    assert [backoff.delay(n) for n in range(1, 9)] == expected


def test_a_floor_raises_the_first_steps_and_huge_attempt_counts_stay_at_the_ceiling():
    backoff = Backoff(base=1.0, ceiling=300.0, floor=60.0, rng=Edges(True))
    assert [backoff.delay(n) for n in (1, 2, 6, 7, 9, 10**6)] == [60.0, 60.0, 60.0, 64.0, 256.0,
                                                                 300.0]  # fmt: skip


def test_jitter_spreads_a_fleet_between_half_and_all_of_a_step():
    backoff = Backoff(base=10.0, ceiling=300.0, rng=random.Random(7))
    waits = [backoff.delay(3) for _ in range(1000)]
    assert min(waits) >= 20.0 and max(waits) <= 40.0
    assert max(waits) - min(waits) > 15.0  # spread, not one value


@pytest.mark.parametrize(("interval", "attempt", "top"), [
    (60.0, 1, 60.0),      # never sooner than an upload interval
    (60.0, 2, 60.0),
    (60.0, 4, 240.0),     # doubling from the call budget (30 s)
    (60.0, 6, 300.0),     # up to max_backoff
    (0.5, 1, 0.5),        # a fast test interval starts from the interval itself
    (0.5, 5, 8.0),
])  # fmt: skip
def test_the_upload_worker_backs_off_on_the_shared_policy(interval, attempt, top):
    worker = UploadWorker(None, upload_interval=interval, threshold_bytes=1,  # type: ignore[arg-type]
                          rng=Edges(True))  # fmt: skip
    worker._attempts = attempt
    assert CALL_BUDGET == 30.0
    assert worker._backoff() == top
