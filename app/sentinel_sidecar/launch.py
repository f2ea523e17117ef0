"""`run -- CMD`: the agent starts the workload itself. The command is held at a gate until the
first reading was taken, so its CPU counts from its first instruction; once it exited it is
reaped only after one more reading, so its last interval counts too (the zombie's counters
are final); stop signals are passed on to it, and its exit status becomes the agent's."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence

from sentinel_sidecar.config import ConfigError
from sentinel_sidecar.signals import STOP_SIGNALS, StopFlag

# `sh` waits for one line on the gate's fd, then becomes the command (same pid): the agent reads
# the process before it runs a single instruction of its own.
_GATE = 'read _ <&{fd}; exec {fd}<&-; exec "$@"'


def check(argv: Sequence[str]) -> None:
    """CMD must name a program: ConfigError naming it, before anything starts."""
    if not argv:
        raise ConfigError("run --: no command given after --")
    if shutil.which(argv[0]) is None:
        raise ConfigError(f"run -- {argv[0]}: not found on PATH or not executable")


class Command:
    """The workload process of `run -- CMD`, started held at the gate."""

    def __init__(self, argv: Sequence[str]) -> None:
        check(argv)
        gate_read, self._gate = os.pipe()
        try:
            # Its own process group: a Ctrl-C reaches it once, through the agent, not twice.
            self._process = subprocess.Popen(
                ["/bin/sh", "-c", _GATE.format(fd=gate_read), "sh", *argv],
                pass_fds=(gate_read,),
                process_group=0,
            )
        finally:
            os.close(gate_read)
        self.argv = tuple(argv)
        self.pid = self._process.pid

    def exited(self) -> bool:
        """True once the command has exited, reaped or not."""
        if self._process.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def reap(self) -> None:
        """Collect an exited command (call after a reading of its final counters)."""
        self._process.wait()

    def release(self) -> None:
        """Let the command start (idempotent)."""
        if self._gate >= 0:
            with contextlib.suppress(BrokenPipeError):  # killed at the gate: its status says so
                os.write(self._gate, b"go\n")
            os.close(self._gate)
            self._gate = -1

    def forward_signals(self, stop: StopFlag) -> None:
        """Stop signals go to the command, not to the agent: the run ends when it exits. Once
        it was reaped they set `stop` as usual (a run kept open by exit_with_workload=false).
        The handler makes one system call, no lock, no log (see `signals`)."""

        def forward(signum: int, _frame: object) -> None:
            if self._process.returncode is None:  # never signal a pid the kernel may reuse
                os.killpg(self.pid, signum)
            else:
                stop.set(signum)

        for signum in STOP_SIGNALS:
            signal.signal(signum, forward)

    def abort(self) -> None:
        """End a command still held at the gate (the run ended before it could be watched);
        one already released is left to finish."""
        if self._gate >= 0:
            os.killpg(self.pid, signal.SIGKILL)
            os.close(self._gate)
            self._gate = -1

    def exit_code(self, timeout: float) -> int | None:
        """Its exit code once it exited (128 + N for death by signal N), else None."""
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return 128 - code if code < 0 else code
