"""A total time budget for a blocking call: timeouts of HTTP libraries bound each socket read,
so a peer that trickles one byte a second, or answers once a minute, outlives any of them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

_T = TypeVar("_T")


class DeadlineExceeded(Exception):
    """The call was still running at its deadline; it is abandoned, its result never used."""


class Call(Generic[_T]):
    """`call()` running in a daemon thread, so that its caller can stop waiting for it.

    A call that never returns is left behind and ends with the process; `running` tells whether
    an abandoned call may still take effect (an upload that lands late)."""

    def __init__(
        self, call: Callable[[], _T], *, what: str, on_done: Callable[[], None] | None = None
    ) -> None:
        self.what = what
        self._call = call
        self._on_done = on_done
        self._done = threading.Event()
        self._outcome: list[_T] = []
        self._failure: list[BaseException] = []
        threading.Thread(target=self._run, name=f"call:{what}", daemon=True).start()

    def _run(self) -> None:
        try:
            self._outcome.append(self._call())
        except BaseException as exc:  # handed to whoever asks for the result
            self._failure.append(exc)
        self._done.set()
        if self._on_done is not None:
            self._on_done()

    @property
    def running(self) -> bool:
        """True until the call returned or raised."""
        return not self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds; True when the call is done."""
        return self._done.wait(max(0.0, timeout))

    def result(self) -> _T:
        """The call's return value, or its exception raised here; only once it is done."""
        if self._failure:
            raise self._failure[0]
        return self._outcome[0]


def call_before(
    deadline: float,
    call: Callable[[], _T],
    *,
    what: str,
    monotonic: Callable[[], float] = time.monotonic,
) -> _T:
    """`call()`'s result if it returns before `deadline` (monotonic), else DeadlineExceeded."""
    left = deadline - monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"{what}: no time left")
    running = Call(call, what=what)
    if not running.wait(left):
        raise DeadlineExceeded(f"{what}: still running after {left:.1f} s, abandoned")
    return running.result()
