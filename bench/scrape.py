"""What a scrape of `/metrics` costs the agent, watching a workload of 100 processes at 1 s: the
CPU of the first scrape (prometheus_client is imported then) and of each later one, and the
RSS that the first scrape adds. CPU from the agent's threads' schedstat (nanoseconds): the CPU
of a window with a scrape every 50 ms less that of an equal window without. Not run in CI.

    python -m bench.scrape [--repeats 3] [--processes 100]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from bench.run import free_port, rows_written
from bench.workload import Workload, rss_mib
from tests.support.agent import agent_env

WINDOW = 10.0  # seconds of each window
EVERY = 0.05  # seconds between scrapes in the scraped window


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far (schedstat: nanoseconds on the CPU)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total


def once(processes: int) -> dict[str, float]:
    workload = Workload(processes)
    port = free_port()
    spool = Path(tempfile.mkdtemp(prefix="bench-scrape-"))
    agent = subprocess.Popen(
        [sys.executable, "-m", "sentinel_sidecar", "run", "--pid", str(workload.pid),
         "--spool-dir", str(spool), "--health-port", str(port), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=agent_env(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while rows_written(spool) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("no rows within 30 s")
            time.sleep(0.1)
        rss_before = rss_mib(agent.pid)[0]
        before = cpu_ns(agent.pid)
        size = len(requests.get(url, timeout=5).content)
        first = (cpu_ns(agent.pid) - before) / 1e9
        rss_after = rss_mib(agent.pid)[0]
        start = cpu_ns(agent.pid)
        time.sleep(WINDOW)
        idle = (cpu_ns(agent.pid) - start) / 1e9
        scrapes, start = 0, cpu_ns(agent.pid)
        end = time.monotonic() + WINDOW
        while time.monotonic() < end:
            requests.get(url, timeout=5)
            scrapes += 1
            time.sleep(EVERY)
        busy = (cpu_ns(agent.pid) - start) / 1e9
    finally:
        agent.terminate()
        agent.wait(60)
        workload.stop()
    return {"first_ms": first * 1000, "per_scrape_ms": (busy - idle) / scrapes * 1000,
            "scrapes": scrapes, "rss_before_mib": rss_before, "rss_after_mib": rss_after,
            "bytes": size}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--processes", type=int, default=100)
    args = parser.parse_args()
    runs = [once(args.processes) for _ in range(args.repeats)]

    def shown(key: str, digits: int) -> str:
        values = [run[key] for run in runs]
        return (f"{statistics.median(values):.{digits}f} "
                f"({min(values):.{digits}f}-{max(values):.{digits}f})")  # fmt: skip

    print(f"| /metrics at {args.processes} processes, {args.repeats} runs | median (range) |")
    print("|---|---|")
    print(f"| first scrape (imports prometheus_client) | {shown('first_ms', 1)} ms CPU |")
    print(f"| each later scrape ({runs[0]['scrapes']:.0f} in {WINDOW:.0f} s) | "
          f"{shown('per_scrape_ms', 2)} ms CPU |")  # fmt: skip
    print(f"| RSS before the first scrape / after | {shown('rss_before_mib', 1)} / "
          f"{shown('rss_after_mib', 1)} MiB |")  # fmt: skip
    print(f"| body | {shown('bytes', 0)} bytes |")


if __name__ == "__main__":
    main()
