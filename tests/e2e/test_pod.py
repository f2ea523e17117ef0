"""The real CLI in a simulated pod (tests/pod.py) where the workload's cgroup is out of the
sidecar's sight, as on cgroup v2 nodes: what it reports through /proc against the workload
cgroup's own counters, for the workload shapes real batch jobs have.

Every workload ends with a short idle tail before its init exits: the CPU of a container's
init in its last partial interval (it is reaped outside the namespace) is the one loss the /proc
path cannot avoid, and `test_a_busy_init_loses_at_most_its_last_interval` bounds it. The kernel
also truncates each per-process CPU figure to a clock tick (10 ms), which costs a run a few tens
of milliseconds whatever its length; every shape uses 3.5 s or more of CPU so that this fixed
loss stays well inside the 3 % the tests allow.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from tests.support import pod as simulated
from tests.support.agent import agent_env, chunk_rows, dir_chunks, log_events, run_args
from tests.support.pod import PRELUDE, SHAPES

UNAVAILABLE = simulated.available()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))

INTERVAL = 0.25


@dataclass(frozen=True)
class Measured:
    cpu_s: float
    peak_mib: float
    true_cpu_s: float
    true_peak_mib: float
    measuring: list[dict[str, str]]
    rows: list[dict[str, str]]

    @property
    def cpu_error(self) -> float:
        return self.cpu_s / self.true_cpu_s - 1

    @property
    def memory_error(self) -> float:
        return self.peak_mib / self.true_peak_mib - 1


def run_in_pod(pod: simulated.Pod, script: str, tmp_path: Path) -> Measured:
    """Start the sidecar, then the workload; the sidecar ends when the workload is gone."""
    env = agent_env()
    output = tmp_path / "output"
    args = run_args(tmp_path / "spool", "--interval", str(INTERVAL), "--log-format", "json",
                    output=output)  # fmt: skip
    sidecar_pid, log = pod.start_sidecar(args, env)
    sidecar_shim = pod.last_shim
    deadline = time.monotonic() + 20
    while b'"measuring"' not in log.read_bytes():  # its first reading is taken
        assert sidecar_shim.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the sidecar took no reading within 20 s"
        time.sleep(0.02)
    workload = pod.container("workload")
    pod.start(workload, [sys.executable, "-c", PRELUDE + script])
    assert pod.last_shim.wait(60) == 0
    assert sidecar_shim.wait(30) == 0, log.read_text()
    lines = log_events(log.read_text())
    rows = [
        dict(zip(SENTINEL_COLUMNS, row.rstrip("\n").split(","), strict=True))
        for row in chunk_rows(dir_chunks(output))
    ]
    cpu = sum(float(r["process_utime"] or 0) + float(r["process_stime"] or 0) for r in rows)
    peak = max(float(r["process_memory_mib"] or 0) for r in rows)
    assert sidecar_pid not in workload.pids()
    return Measured(
        cpu_s=cpu,
        peak_mib=peak,
        true_cpu_s=workload.cpu_seconds(),
        true_peak_mib=workload.peak_working_set / 2**20,
        measuring=[line for line in lines if line.get("event") == "measuring"],
        rows=rows,
    )


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_proc_path_matches_the_workload_cgroup(pod: simulated.Pod, tmp_path: Path, shape: str):
    measured = run_in_pod(pod, SHAPES[shape], tmp_path)
    print(
        f"{shape}: cpu {measured.cpu_s:.3f} s of {measured.true_cpu_s:.3f} s "
        f"({measured.cpu_error:+.1%}); peak {measured.peak_mib:.1f} MiB of "
        f"{measured.true_peak_mib:.1f} MiB ({measured.memory_error:+.1%})"
    )
    assert abs(measured.cpu_error) <= 0.03
    assert abs(measured.memory_error) <= 0.10
    assert [(m["path"], m["reason"]) for m in measured.measuring] == [
        ("none", "no workload process visible yet"),
        ("proc", "workload cgroup outside this cgroup namespace"),
    ]


def test_a_busy_init_loses_at_most_its_last_interval(pod: simulated.Pod, tmp_path: Path):
    # Busy until the very end: what it used after the last tick leaves with it.
    measured = run_in_pod(pod, "ballast = hold(50)\nburn(2.0)\n", tmp_path)
    lost = measured.true_cpu_s - measured.cpu_s
    assert -0.01 <= lost <= INTERVAL * 1.2 + 0.05
