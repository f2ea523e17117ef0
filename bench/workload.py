"""Benchmark workloads: N real processes (a parent forking N-1 children), maybe in a cgroup."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# The spawner: waits for "go" on stdin (so the bench can move it into a cgroup first, and the
# children inherit it), forks n-1 children, prints "ready". Every 20th child is busy.
_SPAWNER = r"""
import os, signal, sys, time
n = int(sys.argv[1])
sys.stdin.readline()
for i in range(n - 1):
    if os.fork() == 0:
        if i % 20 == 0:
            while True:
                sum(range(20000))
                time.sleep(0.05)
        signal.pause()
        os._exit(0)
print("ready", flush=True)
signal.pause()
"""

CGROUP_NAME = "sentinel-bench"
_V1_CONTROLLERS = ("cpu,cpuacct", "cpuacct", "cpu", "memory", "blkio", "pids")


class Workload:
    """`processes` real processes under one parent; `stop()` kills them all."""

    def __init__(self, processes: int, cgroup_root: Path | None = None) -> None:
        self.processes = processes
        self._cgroup_dirs: list[Path] = []
        self._process = subprocess.Popen(
            [sys.executable, "-c", _SPAWNER, str(processes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.pid = self._process.pid
        if cgroup_root is not None:
            self._join_cgroup(cgroup_root)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write("go\n")
        self._process.stdin.flush()
        if self._process.stdout.readline() != "ready\n":
            raise RuntimeError("workload spawner did not start")

    @property
    def cgroup(self) -> str | None:
        """The cgroup path (relative to the cgroup root) when the workload has its own."""
        return f"/{CGROUP_NAME}" if self._cgroup_dirs else None

    def _join_cgroup(self, root: Path) -> None:
        candidates = [root / "unified", root] + [root / name for name in _V1_CONTROLLERS]
        for base in candidates:
            if not (base / "cgroup.procs").exists() or base in [
                d.parent for d in self._cgroup_dirs
            ]:
                continue
            directory = base / CGROUP_NAME
            try:
                directory.mkdir(exist_ok=True)
                (directory / "cgroup.procs").write_text(f"{self.pid}\n")
            except OSError:
                continue
            self._cgroup_dirs.append(directory)

    def stop(self) -> None:
        """Kill every process of the workload and remove its cgroups."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self._process.wait(30)
        deadline = time.monotonic() + 10
        for directory in self._cgroup_dirs:
            while time.monotonic() < deadline:
                try:
                    directory.rmdir()
                    break
                except OSError:
                    time.sleep(0.05)  # the killed children are still being reaped


def cpu_seconds(pid: int) -> float:
    """CPU of one process and of the children it reaped (utime + stime + cutime + cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of one process in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, []))
    return found


def tree_usage(pid: int) -> tuple[float, float, float]:
    """CPU-seconds (reaped children included), VmRSS and VmHWM (MiB) summed over a process and
    its descendants."""
    cpu = rss = peak = 0.0
    for member in tree(pid):
        try:
            cpu += cpu_seconds(member)
            now, high = rss_mib(member)
        except (OSError, KeyError):
            continue
        rss += now
        peak += high
    return cpu, rss, peak
