"""The agent beside resource-tracker 0.5.0 and the kernel's floor, in one run: the three watch
the same workload at the same interval, at the same time, in a pid namespace of their own (as
in a pod). Per workload size (1, 100, 1,000 processes) and repeat:

- start-up CPU: CPU-seconds from exec to its first sample, from `wait4`'s rusage of a sampler
  stopped right there (microseconds; its reaped children included);
- per-tick CPU: in a second run, the CPU-seconds its process tree used over a window that
  starts two ticks after its first sample, per tick (/proc's figures, 10 ms coarse: the window
  is long, 40 s by default, so that is at most 0.5 ms a tick);
- peak RSS: VmHWM summed over its processes at the end of that window.

The floor is the loop no /proc sampler can undercut: list /proc and pread `stat` and `io` of
every process once per tick, the files kept open. Not run in CI.

    python -m bench.compare [--quick] [--repeats 3] [--window 40] [--sizes 1 100 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.run import rows_written
from bench.workload import Workload, tree_usage
from tests.support.agent import agent_env

INTERVAL = 1.0
_IN_NAMESPACE = "SENTINEL_COMPARE_IN_PID_NAMESPACE"

# resource-tracker as its README starts it, tracking one pid; says "first" once it has a row.
PEER = r"""
import sys, time
from resource_tracker import ResourceTracker
tracker = ResourceTracker(pid=int(sys.argv[1]), interval=float(sys.argv[2]), autostart=True,
                          track_system=False, discover_server=False, discover_cloud=False)
while not len(tracker.process_metrics):
    time.sleep(0.2)
print("first", flush=True)
sys.stdin.readline()
tracker.stop()
"""

# The floor: what the kernel makes any /proc sampler spend.
FLOOR = r"""
import os, sys, time
interval, fds, first = float(sys.argv[1]), {}, True
next_tick = time.monotonic()
while True:
    pids = [name for name in os.listdir("/proc") if name.isdigit()]
    for pid in pids:
        for name in ("stat", "io"):
            fd = fds.get((pid, name))
            if fd is None:
                try:
                    fd = fds[(pid, name)] = os.open(f"/proc/{pid}/{name}", os.O_RDONLY)
                except OSError:
                    continue
            try:
                os.pread(fd, 4096, 0)
            except OSError:
                os.close(fds.pop((pid, name)))
    if first:
        print("first", flush=True)
        first = False
    next_tick += interval
    time.sleep(max(0.0, next_tick - time.monotonic()))
"""


@dataclass
class Observer:
    """One sampler under test: its process and how to tell it has taken its first sample."""

    name: str
    process: subprocess.Popen[str]
    sampled: Callable[[], bool]
    first: float | None = None  # monotonic time of its first sample


def start_observers(pid: int, work: Path) -> list[Observer]:
    ours = subprocess.Popen(
        [sys.executable, "-m", "sentinel_sidecar", "run", "--pid", str(pid), "--interval",
         str(INTERVAL), "--spool-dir", str(work / "spool"), "--health-port", "0",
         "--log-level", "warning"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env=agent_env(),
        text=True,
    )  # fmt: skip
    said: dict[str, bool] = {}

    def says_first(name: str, process: subprocess.Popen[str]) -> Callable[[], bool]:
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)

        def check() -> bool:
            if not said.get(name):
                assert process.stdout is not None
                said[name] = "first" in (process.stdout.readline() or "")
            return said[name]

        return check

    peer = subprocess.Popen([sys.executable, "-c", PEER, str(pid), str(INTERVAL)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    floor = subprocess.Popen([sys.executable, "-c", FLOOR, str(INTERVAL)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    return [
        Observer(
            "sentinel-sidecar",
            ours,
            lambda: (work / "spool").is_dir() and rows_written(work / "spool") > 0,
        ),
        Observer("resource-tracker", peer, says_first("peer", peer)),
        Observer("floor", floor, says_first("floor", floor)),
    ]


def killed_cpu(observer: Observer) -> float:
    """SIGKILL the sampler (no stop sequence to add its cost) and its CPU-seconds from exec,
    from `wait4`'s rusage (its reaped children included)."""
    process = observer.process
    process.kill()
    try:
        _pid, _status, usage = os.wait4(process.pid, 0)
    finally:
        process.returncode = -9  # reaped here: Popen must not wait for it again
    return usage.ru_utime + usage.ru_stime


def one_phase(size: int, window: float | None) -> dict[str, dict[str, float]]:
    """The three samplers on one workload. Without a `window`: each stopped right at its first
    sample, its CPU-seconds from exec (`startup_s`). With one: CPU per tick over `window`
    seconds from two ticks after the last first sample (`tick_ms`), and peak RSS."""
    workload = Workload(size)
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    observers = start_observers(workload.pid, work)
    measured: dict[str, dict[str, float]] = {}
    try:
        deadline = time.monotonic() + 60
        while any(o.first is None for o in observers):
            if time.monotonic() > deadline:
                raise RuntimeError("a sampler took no first sample within 60 s")
            for observer in observers:
                if observer.first is None and observer.sampled():
                    observer.first = time.monotonic()
                    if window is None:  # start-up: stopped right at its first sample
                        measured[observer.name] = {"startup_s": killed_cpu(observer)}
            time.sleep(0.01)
        if window is not None:
            time.sleep(2 * INTERVAL)
            before = {o.name: tree_usage(o.process.pid)[0] for o in observers}
            time.sleep(window)
            for observer in observers:
                cpu, _rss, peak = tree_usage(observer.process.pid)
                measured[observer.name] = {
                    "tick_ms": (cpu - before[observer.name]) / (window / INTERVAL) * 1000,
                    "peak_mib": peak,
                }
        return measured
    finally:
        for observer in observers:
            if observer.process.returncode is None:
                observer.process.kill()
                observer.process.wait(10)
        workload.stop()
        shutil.rmtree(work, ignore_errors=True)


def one_run(size: int, window: float) -> dict[str, dict[str, float]]:
    """Start-up, per-tick CPU and peak RSS of the three samplers on `size` processes."""
    first = one_phase(size, None)
    steady = one_phase(size, window)
    return {name: {**first[name], **steady[name]} for name in steady}


def median_range(values: list[float], digits: int) -> str:
    shown = f"{statistics.median(values):.{digits}f}"
    if len(values) > 1:
        shown += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    return shown


def table(results: dict[int, list[dict[str, dict[str, float]]]]) -> str:
    rows = [
        "| processes | per tick: ours / resource-tracker / floor (ms CPU) | peer/ours | "
        "ours/floor | start-up CPU: ours / peer (s) | peak RSS: ours / peer (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for size, runs in results.items():

        def values(name: str, key: str, runs: list[Any] = runs) -> list[float]:
            return [run[name][key] for run in runs]

        ours, peer, floor = (values(n, "tick_ms") for n in
                             ("sentinel-sidecar", "resource-tracker", "floor"))  # fmt: skip
        ratio_peer = [p / o for p, o in zip(peer, ours, strict=True) if o > 0] or [0.0]
        ratio_floor = [o / f for o, f in zip(ours, floor, strict=True) if f > 0] or [0.0]
        rows.append(
            f"| {size} | {median_range(ours, 2)} / {median_range(peer, 2)} / "
            f"{median_range(floor, 2)} | {median_range(ratio_peer, 1)}x | "
            f"{median_range(ratio_floor, 2)}x | "
            f"{median_range(values('sentinel-sidecar', 'startup_s'), 3)} / "
            f"{median_range(values('resource-tracker', 'startup_s'), 3)} | "
            f"{median_range(values('sentinel-sidecar', 'peak_mib'), 1)} / "
            f"{median_range(values('resource-tracker', 'peak_mib'), 1)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 and 100 processes, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--window", type=float, default=40.0, help="seconds of steady sampling")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    args = parser.parse_args()
    if os.geteuid() == 0 and os.environ.get(_IN_NAMESPACE) != "1":
        # In a pid namespace of its own, as in a pod: the node's other processes are not read.
        os.environ[_IN_NAMESPACE] = "1"
        unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        os.execvp("unshare", [*unshare, sys.executable, "-m", "bench.compare", *sys.argv[1:]])
    sizes = args.sizes or ([1, 100] if args.quick else [1, 100, 1000])
    repeats = 1 if args.quick else args.repeats
    results: dict[int, list[dict[str, dict[str, float]]]] = {}
    for size in sizes:
        for repeat in range(repeats):
            print(f"compare: {size} processes, run {repeat + 1}/{repeats}", file=sys.stderr)
            results.setdefault(size, []).append(one_run(size, args.window))
    print(table(results))
    out = Path(__file__).parent / "results" / f"compare-{time.strftime('%Y-%m-%d-%H%M')}.json"
    payload: dict[str, Any] = {"interval_s": INTERVAL, "window_s": args.window, "runs": results}
    out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"results: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
