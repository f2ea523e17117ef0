"""The compose topology, without Docker: a holder as PID 1 of the shared pid namespace (as
`pod: pause` in docker-compose.yml), the workload and the agent entered into it from outside,
as `pid: "service:pod"` does. Root only (pid namespaces, cgroups)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import pod as simulated
from tests.support.agent import agent_env, chunk_rows, dir_chunks, log_events, run_args, spool_rows

UNAVAILABLE = simulated.available()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

WORKLOAD = "import time\nend = time.process_time() + 1.5\nwhile time.process_time() < end: pass\n"


def agent_args(tmp_path: Path) -> list[str]:
    return run_args(tmp_path / "spool", "--interval", "0.1", "--upload-interval", "0.5",
                    output=tmp_path / "out")  # fmt: skip


def test_the_agent_outlives_the_workload_and_delivers_everything(tmp_path: Path, pod):
    # With `pid: service:workload` the workload was PID 1: its exit killed the agent (137).
    workload = pod.container("workload")
    pod.start(workload, [sys.executable, "-c", "import time; time.sleep(1.0)\n" + WORKLOAD])
    workload_shim = pod.last_shim
    _pid, log = pod.start_sidecar(agent_args(tmp_path), env={"PATH": "/usr/bin:/bin"})
    agent_shim = pod.last_shim
    workload_shim.wait(30)
    started = time.monotonic()
    code = agent_shim.wait(30)
    elapsed = time.monotonic() - started
    text = log.read_text()
    assert code == 0, text[-3000:]
    events = log_events(text)
    assert "workload_exited" in [event["event"] for event in events]
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    spooled = spool_rows(tmp_path / "spool")
    assert chunk_rows(dir_chunks(tmp_path / "out")) == spooled
    assert summary["rows"] == len(spooled) > 5 and summary["bytes_not_uploaded"] == 0
    cpu = sum(float(row.split(",")[25]) * 0.1 for row in spooled)
    print(f"compose topology: workload ended, agent exit 0 {elapsed:.2f} s later, "
          f"{summary['rows']} rows in {summary['chunks']} chunks, run.json written, "
          f"{cpu:.2f} CPU-s of the workload's 1.5 counted")  # fmt: skip
    assert cpu == pytest.approx(1.5, rel=0.1)


def test_with_the_workload_as_pid_1_its_exit_kills_the_agent(tmp_path: Path):
    # Why docker-compose.yml has a holder: the old topology, reproduced.
    holder = ["unshare", "--pid", "--fork", "--kill-child"]
    workload = subprocess.Popen([*holder, sys.executable, "-c", "import time; time.sleep(2.0)"])
    try:
        pid1 = simulated._child_of(workload.pid, timeout=10)
        agent = subprocess.Popen(
            ["nsenter", "--target", str(pid1), "--pid", "--", sys.executable, "-m",
             "sentinel_sidecar", *agent_args(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=agent_env(),
        )  # fmt: skip
        code = agent.wait(30)
    finally:
        workload.kill()
        workload.wait()
    assert code != 0  # nsenter reports its child killed by SIGKILL
    assert not (tmp_path / "out" / "run.json").exists()
