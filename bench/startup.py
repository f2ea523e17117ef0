"""Start-up alone: the agent (local mode, health server on) tracking a sleeping process is
SIGKILLed as soon as its first row is in the spool; its CPU-seconds from exec come from
`wait4`, its peak RSS from VmHWM just before (`wait4`'s ru_maxrss also counts the bench's own
memory from before the exec). Not run in CI.

    python -m bench.startup [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.run import free_port, rows_written
from bench.workload import rss_mib


def once() -> tuple[float, float]:
    """CPU-seconds and peak RSS (MiB) of one agent from exec to its first row."""
    sleeper = subprocess.Popen(["sleep", "60"])
    spool = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    agent = subprocess.Popen(
        [sys.executable, "-m", "sentinel_sidecar", "run", "--pid", str(sleeper.pid),
         "--spool-dir", str(spool), "--health-port", str(free_port()), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while rows_written(spool) == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("no first row within 30 s")
            time.sleep(0.005)
        peak = rss_mib(agent.pid)[1]
    finally:
        agent.kill()
        _pid, _status, usage = os.wait4(agent.pid, 0)
        agent.returncode = -9  # reaped here
        sleeper.kill()
        sleeper.wait()
        shutil.rmtree(spool, ignore_errors=True)
    return usage.ru_utime + usage.ru_stime, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = [once() for _ in range(parser.parse_args().runs)]
    cpus = [cpu for cpu, _ in runs]
    print(f"start-up CPU to the first row: median {statistics.median(cpus):.3f} s "
          f"({min(cpus):.3f}-{max(cpus):.3f}); peak RSS then "
          f"{statistics.median(rss for _, rss in runs):.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
