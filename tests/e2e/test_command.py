"""`run -- CMD` (the agent starts the workload) and `--pid` on jobs shorter than an interval:
the real CLI, real processes, real signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.agent import chunk_rows, dir_chunks, run_args, start_agent, wait_for_rows

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"
CPU_COLUMNS = slice(23, 25)  # process_utime, process_stime


def command_args(tmp_path: Path, *extra: str) -> list[str]:
    return run_args(tmp_path / "spool", "--upload-interval", "0.5", *extra,
                    output=tmp_path / "out")  # fmt: skip


def cpu_seconds(output: Path) -> float:
    """The workload's CPU-seconds over every row (utime + stime cells), to the cells' own
    precision: a float sum of 0.04 + 0.36 is 0.39999999999999997, not 0.4."""
    rows = chunk_rows(dir_chunks(output))
    return round(sum(float(cell or 0) for row in rows for cell in row.split(",")[CPU_COLUMNS]), 6)


def test_a_command_shorter_than_an_interval_is_counted_from_its_first_instruction(
    tmp_path: Path,
):
    # 0.4 CPU-seconds, all of it inside the first 1 s interval, then exit 3.
    script = BURN.format(s=0.4) + "raise SystemExit(3)\n"
    agent = start_agent(
        [*command_args(tmp_path, "--interval", "1"), "--", sys.executable, "-c", script]
    )
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 3, err[-3000:]  # the command's own exit code
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["exit_code"] == 3 and summary["run_status"] == "failed"
    used = cpu_seconds(tmp_path / "out")
    print(f"run -- CMD of 0.4 CPU-s: {used:.2f} CPU-s recorded, exit {agent.returncode}")
    assert 0.4 <= used < 0.8  # its interpreter's start-up included, nothing before the gate
    assert "shareProcessNamespace" not in err  # no pod hints outside a pod
    assert json.loads(summary["identity"]["command"]["value"])[0] == sys.executable


def test_stop_signals_go_to_the_command_and_its_exit_status_is_the_agents(tmp_path: Path):
    marker = tmp_path / "got-sigterm"
    script = (
        "import signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').close(), "
        "sys.exit(42)))\n"
        "while True: time.sleep(0.05)\n"
    )
    agent = start_agent(
        [*command_args(tmp_path, "--interval", "0.1"), "--", sys.executable, "-c", script]
    )
    wait_for_rows(tmp_path / "spool", 1)
    time.sleep(0.5)
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert marker.exists(), "the command never saw SIGTERM"
    assert agent.returncode == 42, err[-3000:]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["exit_code"] == 42


def test_a_command_killed_by_a_signal_exits_128_plus_the_signal(tmp_path: Path):
    agent = start_agent(
        [*command_args(tmp_path, "--interval", "0.1"), "--", "sh", "-c", "kill -9 $$"]
    )
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 128 + signal.SIGKILL, err[-3000:]


def test_a_command_that_does_not_exist_is_a_config_error(tmp_path: Path):
    result = subprocess.run(
        [sys.executable, "-m", "sentinel_sidecar", *command_args(tmp_path), "--", "no-such-cmd-x"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "sentinel-sidecar: config error: run -- no-such-cmd-x: not found on PATH or not executable"
    ]


def test_a_pid_that_ends_within_the_first_interval_ends_the_run_at_once(tmp_path: Path):
    # `sleep 0.3 & sentinel-sidecar run --pid $!` ran 30 s and printed a pod hint.
    job = subprocess.Popen(["sleep", "0.3"])
    started = time.monotonic()
    agent = start_agent([*command_args(tmp_path, "--interval", "1"), "--pid", str(job.pid)])
    job.wait()
    _out, err = agent.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert agent.returncode == 0, err[-3000:]
    print(f"--pid on a 0.3 s job: agent done {elapsed:.1f} s after start")
    assert elapsed < 8
    assert "shareProcessNamespace" not in err


def test_a_pid_already_gone_says_what_to_use_instead(tmp_path: Path):
    job = subprocess.Popen(["true"])
    job.wait()
    result = subprocess.run(
        [sys.executable, "-m", "sentinel_sidecar", *command_args(tmp_path), "--pid", str(job.pid)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "run -- CMD" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_run_kept_open_after_its_command_still_stops_on_sigterm(tmp_path: Path):
    # exit_with_workload=false: the command is gone, signals have no one left to go to.
    args = [*command_args(tmp_path, "--interval", "0.1", "--exit-with-workload", "false"), "--",
            "true"]  # fmt: skip
    agent = start_agent(args)
    wait_for_rows(tmp_path / "spool", 1)
    time.sleep(1)
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-3000:]  # `true` exited 0
    assert "stop_requested" in err
