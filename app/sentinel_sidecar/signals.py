"""Stop signals. A handler only records the signal and writes one byte to a pipe: no logging,
no lock (a handler runs between two bytecodes of the main thread, which may hold the very
lock it would need, e.g. the log's print lock or an Event's condition)."""

from __future__ import annotations

import os
import select
import signal

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class StopFlag:
    """Set once a stop is asked for; `wait` sleeps until then or a timeout (self-pipe)."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self.signum: int | None = None
        self._set = False

    def set(self, signum: int | None = None) -> None:
        """Ask for the stop; safe in a signal handler and from any thread, any number of times."""
        if self._set:
            return  # a repeated signal: the stop is already under way
        self.signum = signum
        self._set = True
        os.write(self._write, b"!")  # one byte ever: the pipe never fills

    def is_set(self) -> bool:
        """True once a stop was asked for."""
        return self._set

    def wait(self, timeout: float) -> bool:
        """Sleep until the stop is asked for or `timeout` seconds passed; True when stopping."""
        if not self._set:
            select.select([self._read], [], [], max(0.0, timeout))
        return self._set

    @property
    def reason(self) -> str | None:
        """The signal's name (`SIGTERM`), or None when the stop was not a signal."""
        return signal.Signals(self.signum).name if self.signum is not None else None


def install(flag: StopFlag) -> None:
    """SIGTERM, SIGINT, SIGHUP and SIGQUIT all set `flag`: every one of them drains."""

    def handle(signum: int, _frame: object) -> None:
        flag.set(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)


def ignore() -> None:
    """Once the run is over, ignore the stop signals: the interpreter puts the default action
    back while it shuts down, and a late SIGTERM would turn exit 0 into death by signal."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
