"""What the /proc path reports in a simulated pod (tests/support/pod.py), against the workload
cgroup's own counters, for each workload shape; resource-tracker in the same pod over the same
workload.

Root only (pid and cgroup namespaces); at the production interval of 1 s.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from tests.support import pod as simulated
from tests.support.agent import agent_env, chunk_rows, dir_chunks, run_args
from tests.support.pod import PRELUDE, SHAPES

INTERVAL = 1.0
# Both trackers attach while the workload's init waits: neither misses its first seconds.
ATTACH_S = 3.0

# resource-tracker as its users run it, tracking the workload's init (and its children) by pid;
# prints "started", then its process totals once the pid is gone. It runs outside the pod (with
# the init's host pid), so that our sidecar does not count it as part of the workload.
PEER = r"""
import json, os, sys, time
from resource_tracker import ResourceTracker
pid = int(sys.argv[1])
tracker = ResourceTracker(pid=pid, interval=float(sys.argv[2]), autostart=True,
                          track_system=False, discover_server=False, discover_cloud=False)
print("started", flush=True)
while os.path.exists(f"/proc/{pid}"):
    time.sleep(0.02)
tracker.stop()
metrics = tracker.process_metrics
print(json.dumps({"cpu_s": sum(metrics["utime"]) + sum(metrics["stime"]),
                  "peak_mib": max(metrics["memory_mib"], default=0)}), flush=True)
"""


def available() -> str | None:
    return simulated.available()


def shapes(names: list[str], with_peer: set[str]) -> dict[str, Any]:
    """Our error per shape; resource-tracker's for the shapes in `with_peer`."""
    return {name: _one(name, name in with_peer) for name in names}


def _one(shape: str, with_peer: bool) -> dict[str, Any]:
    pod = simulated.Pod()
    work = Path(tempfile.mkdtemp(prefix="bench-pod-"))
    try:
        env = agent_env()
        output = work / "output"
        args = run_args(work / "spool", "--interval", str(INTERVAL), "--log-level", "warning",
                        output=output)  # fmt: skip
        _, log = pod.start_sidecar(args, env)
        sidecar = pod.last_shim
        workload = pod.container("workload")
        script = PRELUDE + f"time.sleep({ATTACH_S})\n" + SHAPES[shape]
        host_pid = pod.start(workload, [sys.executable, "-c", script])
        init = pod.last_shim
        peer = _start_peer(host_pid) if with_peer else None
        assert init.wait(120) == 0
        assert sidecar.wait(60) == 0, log.read_text()
        rows = [
            dict(zip(SENTINEL_COLUMNS, row.rstrip("\n").split(","), strict=True))
            for row in chunk_rows(dir_chunks(output))
        ]
        cpu = sum(float(r["process_utime"] or 0) + float(r["process_stime"] or 0) for r in rows)
        peak = max(float(r["process_memory_mib"] or 0) for r in rows)
        true_cpu = workload.cpu_seconds()
        true_peak = workload.peak_working_set / 2**20
        result: dict[str, Any] = {
            "true_cpu_s": round(true_cpu, 3),
            "true_peak_mib": round(true_peak, 1),
            "cpu_s": round(cpu, 3),
            "peak_mib": round(peak, 1),
            "cpu_error": round(cpu / true_cpu - 1, 4),
            "memory_error": round(peak / true_peak - 1, 4),
        }
        if peer is not None:
            out, _ = peer.communicate(timeout=60)
            figures = json.loads(out.strip().splitlines()[-1])
            result["peer"] = {
                "cpu_s": round(figures["cpu_s"], 3),
                "peak_mib": round(figures["peak_mib"], 1),
                "cpu_error": round(figures["cpu_s"] / true_cpu - 1, 4),
                "memory_error": round(figures["peak_mib"] / true_peak - 1, 4),
            }
        return result
    finally:
        pod.close()
        shutil.rmtree(work, ignore_errors=True)


def _start_peer(pid: int) -> subprocess.Popen[str]:
    """resource-tracker tracking `pid`; returns once it has taken its baseline."""
    peer = subprocess.Popen(
        [sys.executable, "-c", PEER, str(pid), str(INTERVAL)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert peer.stdout is not None
    if peer.stdout.readline() != "started\n":
        raise RuntimeError("resource-tracker did not start")
    return peer
