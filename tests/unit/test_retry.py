"""The one retry policy, its randomness pinned and its clock faked: milliseconds, no sleeping."""

import random

import pytest

from sentinel_sidecar.delivery.retry import (
    RETRY_AFTER_CAP,
    Backoff,
    DeliveryError,
    ErrorKind,
    http_error_kind,
    retry_until,
)
from sentinel_sidecar.delivery.upload import CALL_BUDGET, UploadWorker
from tests.support.clocks import Clock, Edges


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


def failing(*errors: DeliveryError):
    script = list(errors)
    calls: list[float] = []

    def call() -> str:
        calls.append(0.0)
        if script:
            raise script.pop(0)
        return "done"

    return call, calls


def test_retry_until_backs_off_between_passing_failures_until_the_call_succeeds():
    clock = Clock()
    call, calls = failing(DeliveryError("503"), DeliveryError("503"), DeliveryError("503"))
    policy = Backoff(base=0.5, ceiling=4.0, rng=Edges(True))
    assert retry_until(call, clock.now + 60, what="x", backoff=policy,
                       monotonic=clock.monotonic, sleep=clock.sleep) == "done"  # fmt: skip
    assert clock.slept == [0.5, 1.0, 2.0] and len(calls) == 4


def test_retry_until_renews_credentials_at_once_only_once():
    clock = Clock()
    expired = DeliveryError("ExpiredToken", ErrorKind.CREDENTIALS)
    call, _ = failing(expired, DeliveryError("ExpiredToken", ErrorKind.CREDENTIALS))
    retry_until(call, clock.now + 60, what="x", backoff=Backoff(1.0, 4.0, rng=Edges(True)),
                monotonic=clock.monotonic, sleep=clock.sleep)  # fmt: skip
    assert clock.slept == [0.0, 2.0]  # the second refusal waits its step (attempt 2)


@pytest.mark.parametrize("kind", [ErrorKind.REJECTED, ErrorKind.PERMANENT])
def test_retry_until_never_repeats_what_waiting_does_not_fix(kind):
    clock = Clock()
    call, calls = failing(DeliveryError("no", kind))
    with pytest.raises(DeliveryError):
        retry_until(call, clock.now + 60, what="x", monotonic=clock.monotonic, sleep=clock.sleep)
    assert len(calls) == 1 and clock.slept == []


def test_retry_until_stops_when_the_next_attempt_would_start_past_the_deadline():
    clock = Clock()
    call, calls = failing(*[DeliveryError("503", retry_after=3.0)] * 5)
    with pytest.raises(DeliveryError):
        retry_until(call, clock.now + 5, what="x", monotonic=clock.monotonic, sleep=clock.sleep)
    assert clock.slept == [3.0] and len(calls) == 2


def test_a_retry_after_longer_than_the_cap_is_cut_to_it():
    assert DeliveryError("429", retry_after=1e9).retry_after == RETRY_AFTER_CAP


@pytest.mark.parametrize(("status", "kind"), [
    (400, ErrorKind.PERMANENT), (413, ErrorKind.PERMANENT), (422, ErrorKind.PERMANENT),
    (401, ErrorKind.REJECTED), (403, ErrorKind.REJECTED), (404, ErrorKind.REJECTED),
    (408, ErrorKind.TRANSIENT), (429, ErrorKind.TRANSIENT), (503, ErrorKind.TRANSIENT),
])  # fmt: skip
def test_http_statuses_map_to_error_kinds(status, kind):
    assert http_error_kind(status) is kind
