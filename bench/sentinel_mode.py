"""What Sentinel mode costs beside local mode: the agent's peak RSS with requests and boto3
loaded, and the CPU of a credential refresh and of one upload cycle — against moto (S3 and STS
with auth on) and the strict Sentinel API server of the tests, on 127.0.0.1. Not run in CI.

    python -m bench.sentinel_mode [--repeats 5]
"""

from __future__ import annotations

import argparse
import gzip
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.workload import rss_mib
from sentinel_sidecar.delivery.sentinel_api import SentinelClient
from sentinel_sidecar.delivery.sentinel_destination import SentinelDestination
from sentinel_sidecar.measure.rows import Schema, header_line
from sentinel_sidecar.spool.state import State
from sentinel_sidecar.telemetry import Telemetry
from tests.support.agent import sentinel_env
from tests.support.peers import REGION, MotoServer, S3Proxy, SentinelServer

HEADER = header_line(Schema.SENTINEL)
ROW = ",".join(["1"] * 32) + "\n"


def agent_peak(sentinel: SentinelServer, proxy: S3Proxy, seconds: float) -> tuple[float, float]:
    """Peak RSS (MiB, before the stop) and CPU-seconds of the agent in Sentinel mode over
    `seconds` of sampling (uploads every 2 s), its stop included."""
    sleeper = subprocess.Popen(["sleep", str(seconds + 30)])
    spool = Path(tempfile.mkdtemp(prefix="bench-sentinel-"))
    env = {**os.environ, **sentinel_env(sentinel, proxy)}
    agent = subprocess.Popen(
        [sys.executable, "-m", "sentinel_sidecar", "run", "--pid", str(sleeper.pid),
         "--interval", "0.2", "--upload-interval", "2", "--spool-dir", str(spool),
         "--health-port", "0", "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(seconds)
    # VmHWM, not wait4's ru_maxrss: that counts this process's memory from before the exec.
    peak = rss_mib(agent.pid)[1]
    agent.send_signal(signal.SIGTERM)
    _pid, _status, usage = os.wait4(agent.pid, 0)
    agent.returncode = 0
    sleeper.kill()
    sleeper.wait()
    return peak, usage.ru_utime + usage.ru_stime


def refresh_and_upload(sentinel: SentinelServer, proxy: S3Proxy) -> tuple[float, float]:
    """CPU-seconds (this thread) of a credential refresh with the first upload on the new
    credentials (signed with the new keys), and of one upload cycle of 60 rows on the same ones."""
    destination = SentinelDestination(
        SentinelClient(sentinel.url, sentinel.token), lambda deadline: {"job_name": "bench"},
        api_url=sentinel.url, inline_max_bytes=0, region=REGION,
        endpoint_url=proxy.endpoint, telemetry=Telemetry(),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    state = destination.open(State(None, None, 0, 0, HEADER, started_at=time.time()), deadline)
    body = gzip.compress((HEADER + ROW * 60).encode(), mtime=0)
    destination.put_chunk(state.chunk_name(1), body, deadline)  # the client exists
    started = time.thread_time()
    destination._refresh(deadline)
    destination.put_chunk(state.chunk_name(2), body, deadline)
    refresh = time.thread_time() - started
    started = time.thread_time()
    destination.put_chunk(state.chunk_name(3), gzip.compress((HEADER + ROW * 60).encode()),
                          deadline)  # fmt: skip
    upload = time.thread_time() - started
    return refresh, upload


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    moto = MotoServer()
    try:
        peaks, cpus, refreshes, uploads = [], [], [], []
        for _ in range(args.repeats):
            proxy = S3Proxy(moto.port)
            sentinel = SentinelServer(moto, proxy, moto.new_bucket())
            try:
                peak, cpu = agent_peak(sentinel, proxy, args.seconds)
                peaks.append(peak)
                cpus.append(cpu)
                refresh, upload = refresh_and_upload(sentinel, proxy)
                refreshes.append(refresh)
                uploads.append(upload)
            finally:
                sentinel.close()
                proxy.close()
    finally:
        moto.close()

    def shown(values: list[float], scale: float, digits: int) -> str:
        low, mid, high = (value * scale for value in (min(values), statistics.median(values),
                                                       max(values)))  # fmt: skip
        return f"{mid:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"

    print("| Sentinel mode | median (range) |\n|---|---|")
    print(f"| agent peak RSS, {args.seconds:.0f} s at 0.2 s, uploads every 2 s | "
          f"{shown(peaks, 1, 1)} MiB |")  # fmt: skip
    print(f"| agent CPU-seconds over that run, start and stop included | {shown(cpus, 1, 2)} s |")
    print(f"| credential refresh + the first upload on the new credentials | "
          f"{shown(refreshes, 1000, 1)} ms CPU |")  # fmt: skip
    print(f"| one upload cycle, 60 rows | {shown(uploads, 1000, 1)} ms CPU |")


if __name__ == "__main__":
    main()
