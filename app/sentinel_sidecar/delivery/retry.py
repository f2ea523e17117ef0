"""The one retry policy of delivery. Every call to a destination (and every Sentinel API request)
is one attempt; what to do after a failure is decided here, from its `ErrorKind`:

- `transient` (network, 5xx, 429, a deadline): back off and try again, for as long as it takes;
  the spool's cap bounds what waits meanwhile.
- `credentials` (S3 refused the upload credentials): renew them and try again at once, once.
- `rejected` (the peer refuses the caller: 401, 403, a missing bucket): back off like
  `transient`, logged as an error, since only a change of settings fixes it.
- `permanent` (the peer refuses this request for what it holds: 400, 413, 422): the same
  request is never accepted, so a chunk refused `max_chunk_refusals` times in a row is set
  aside on the spool's volume (`refused/`) and delivery goes on with the next rows; a finish
  refused so is not sent again.

Backoff: exponential steps with equal jitter (half the step fixed, half random) between a floor
and a ceiling, its randomness injected so a test can pin it; a `Retry-After` the peer sent
wins over a shorter step, up to `RETRY_AFTER_CAP`."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

import structlog

from sentinel_sidecar import __version__

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

RETRY_AFTER_CAP = 600.0  # the longest Retry-After honoured, in seconds
CONNECT_TIMEOUT = 5.0  # seconds, for every HTTP peer (Sentinel API, S3, Kubernetes API)
READ_TIMEOUT = 30.0
USER_AGENT = f"sentinel-sidecar/{__version__}"  # on every request, so peers can tell versions


class ErrorKind(StrEnum):
    """What the retry policy does about a failure (see the module's text)."""

    TRANSIENT = "transient"
    CREDENTIALS = "credentials"
    REJECTED = "rejected"
    PERMANENT = "permanent"


class DeliveryError(Exception):
    """A destination could not do what was asked; the cursor does not move.

    `retry_after`: seconds before the next attempt when the peer asked for a wait."""

    def __init__(
        self, message: str, kind: ErrorKind = ErrorKind.TRANSIENT, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = None if retry_after is None else min(RETRY_AFTER_CAP, retry_after)


def http_error_kind(status: int) -> ErrorKind:
    """The kind of an HTTP error status: 400/413/422 refuse the request itself, other 4xx
    (401, 403, 404, 409) refuse the caller, 408, 429 and 5xx pass."""
    if status in (400, 413, 422):
        return ErrorKind.PERMANENT
    if 400 <= status < 500 and status not in (408, 429):
        return ErrorKind.REJECTED
    return ErrorKind.TRANSIENT


def request_timeouts(left: float) -> tuple[float, float]:
    """(connect, read) timeouts of one HTTP request with `left` seconds of its budget."""
    return min(CONNECT_TIMEOUT, left), min(READ_TIMEOUT, left)


@dataclass(frozen=True, eq=False)
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

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """The wait after the `attempt`-th failure: the step, or the peer's longer wish."""
        return max(self.delay(attempt), retry_after or 0.0)


# At the stop every second counts: a failed attempt is tried again soon, within the budget.
STOP_BACKOFF = Backoff(base=0.5, ceiling=4.0)


def retry_until(
    call: Callable[[], _T],
    deadline: float,
    *,
    what: str,
    backoff: Backoff = STOP_BACKOFF,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """`call()` attempted until it succeeds, fails for a reason waiting does not fix
    (`rejected`, `permanent`), or the next attempt could not start before `deadline`
    (monotonic); the last error is raised then. Used where there is no later cycle to retry
    in: the last drain and the close of the run."""
    attempt = 0
    renewed = False
    while True:
        try:
            return call()
        except DeliveryError as exc:
            attempt += 1
            if exc.kind in (ErrorKind.REJECTED, ErrorKind.PERMANENT):
                raise
            at_once = exc.kind is ErrorKind.CREDENTIALS and not renewed
            renewed = renewed or at_once
            wait = 0.0 if at_once else backoff.wait(attempt, exc.retry_after)
            if monotonic() + wait >= deadline:
                raise
            log.debug("attempt_failed", call=what, attempt=attempt, kind=exc.kind,
                      wait_s=round(wait, 2), error=str(exc))  # fmt: skip
            sleep(wait)
