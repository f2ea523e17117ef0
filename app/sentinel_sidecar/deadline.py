"""A total time budget for a blocking call: timeouts of HTTP libraries bound each socket read,
so a peer that trickles one byte a second, or answers once a minute, outlives any of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


class DeadlineExceeded(Exception):
    """The call was still running at its deadline; it is abandoned, its result never used."""


def call_before(
    deadline: float,
    call: Callable[[], _T],
    *,
    what: str,
    monotonic: Callable[[], float] = time.monotonic,
) -> _T:
    """`call()`'s result if it returns before `deadline` (monotonic), else DeadlineExceeded.

    The call runs in a daemon thread: one that never returns is left behind and ends with the
    process. Exceptions of the call are raised here.
    """
    left = deadline - monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{what}: no time left")
    outcome: list[_T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:  # handed to the caller
            failure.append(exc)

    worker = threading.Thread(target=run, name=f"deadline:{what}", daemon=True)
    worker.start()
    worker.join(left)
    if worker.is_alive():
        raise DeadlineExceeded(f"{what}: still running after {left:.1f} s, abandoned")
    if failure:
        raise failure[0]
    return outcome[0]
