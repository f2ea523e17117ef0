"""Faults a node really produces, reproduced with real mechanisms against the real CLI: each
case ends with exit 0, no partial or glued row delivered, and nothing lost or duplicated
against the spool. Figures go to stdout (`pytest -s`)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.agent import chunk_rows, dir_chunks, spool_rows, wait_for_rows, wait_until

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux only


def local_args(tmp_path: Path, pid: int, *extra: str) -> list[str]:
    return ["run", "--spool-dir", str(tmp_path / "spool"), "--output-dir", str(tmp_path / "out"),
            "--interval", "0.05", "--upload-interval", "0.2", "--max-chunk-bytes", "2000",
            "--pid", str(pid), "--health-port", "0", "--shutdown-timeout", "5", *extra]  # fmt: skip


def spawn(args: list[str], **popen: object) -> subprocess.Popen[bytes]:
    ours = ("TRACKER_", "SENTINEL_", "AWS_", "S3_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    return subprocess.Popen([sys.executable, "-m", "sentinel_sidecar", *args], env=env, **popen)  # type: ignore[call-overload]


def delivered_exactly_once(tmp_path: Path) -> int:
    """Rows in the spool; asserts the chunks hold exactly them, each whole, in order."""
    spooled = spool_rows(tmp_path / "spool")
    assert chunk_rows(dir_chunks(tmp_path / "out")) == spooled
    assert all(row.count(",") == 31 for row in spooled)  # whole rows, none glued
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["rows"] == len(spooled) and summary["bytes_not_uploaded"] == 0
    return len(spooled)


# --- signals ---------------------------------------------------------------------------------


def test_sigterm_while_stderr_is_stalled_never_deadlocks(tmp_path: Path, workload):
    # The handler used to log: structlog's print lock is not re-entrant, so a SIGTERM landing
    # while the main thread wrote a line hung the agent until SIGKILL (5 of 5).
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    agent = spawn(local_args(tmp_path, workload.pid), stdout=subprocess.DEVNULL, stderr=write_end)
    os.close(write_end)
    try:
        wait_for_rows(tmp_path / "spool", 20)  # by now stderr is full: the agent blocks on it
        agent.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        started = time.monotonic()
        os.set_blocking(read_end, False)
        while agent.poll() is None and time.monotonic() - started < 20:
            try:
                os.read(read_end, 65536)  # the reader catches up
            except BlockingIOError:
                time.sleep(0.01)
        assert agent.poll() == 0, "still alive 20 s after stderr was read again"
        print(f"stalled stderr: exit {agent.returncode}, {time.monotonic() - started:.2f} s "
              "after the reader resumed")  # fmt: skip
    finally:
        if agent.poll() is None:
            agent.kill()
        os.close(read_end)
    delivered_exactly_once(tmp_path)


@pytest.mark.parametrize("gap", [0.005, 0.02])
def test_a_second_sigterm_soon_after_the_first_is_harmless(tmp_path: Path, workload, gap: float):
    agent = spawn(local_args(tmp_path, workload.pid), stderr=subprocess.PIPE)
    wait_for_rows(tmp_path / "spool", 10)
    agent.send_signal(signal.SIGTERM)
    time.sleep(gap)
    agent.send_signal(signal.SIGTERM)
    agent.send_signal(signal.SIGINT)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err.decode()[-2000:]
    rows = delivered_exactly_once(tmp_path)
    print(f"second signal after {gap * 1000:.0f} ms: exit 0, {rows} rows, lost 0, duplicated 0")


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3])
def test_sigterm_during_start_up_drains_and_exits_0(tmp_path: Path, workload, delay: float):
    agent = spawn(local_args(tmp_path, workload.pid), stderr=subprocess.PIPE)
    time.sleep(delay)
    wait_until(lambda: _handlers_installed(agent.pid), 10, "stop handlers installed")
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err.decode()[-2000:]
    delivered_exactly_once(tmp_path)


def _handlers_installed(pid: int) -> bool:
    """The process catches SIGTERM (SigCgt in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught & (1 << (signal.SIGTERM - 1)))
