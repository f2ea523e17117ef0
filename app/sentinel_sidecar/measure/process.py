"""A process as /proc shows it, and which processes are the workload: the pod's processes
other than the agent's own tree and the pause container, or one process and its descendants."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True, eq=False)
class ProcessInfo:
    """One process as seen in `/proc/<pid>/stat`; CPU times cumulative, in seconds.

    `children_*` is the CPU of descendants this process has reaped: the kernel moves a child's
    whole CPU there when its parent waits for it. A zombie has exited but is not reaped yet; its
    CPU still shows, its memory is gone.
    """

    pid: int
    ppid: int
    name: str
    started: float  # seconds since boot (CLOCK_BOOTTIME)
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    children_user_s: float = 0.0
    children_system_s: float = 0.0
    rss_bytes: int = 0
    zombie: bool = False

    @cached_property
    def key(self) -> str:
        """Identity that survives pid reuse."""
        return f"pid:{self.pid}:{self.started:.2f}"

    @property
    def is_pause(self) -> bool:
        """The pod's pause process: PID 1 of a shared pid namespace, reaper of orphans."""
        return self.pid == 1 and self.name == "pause"


@dataclass(frozen=True, eq=False)
class ProcessUsage:
    """Memory of one process now (PSS, else RSS) and its cumulative IO."""

    memory_bytes: int
    read_bytes: int | None
    write_bytes: int | None


def own_tree(processes: Iterable[ProcessInfo], own_pid: int) -> set[int]:
    """The sidecar's own pids: itself, its ancestors (e.g. a shell wrapper) and descendants."""
    by_pid = {process.pid: process for process in processes}
    mine = descendants(by_pid.values(), own_pid) | {own_pid}
    parent = by_pid[own_pid].ppid if own_pid in by_pid else 0
    while parent > 1 and parent in by_pid and parent not in mine:
        mine.add(parent)
        parent = by_pid[parent].ppid
    return mine


def descendants(processes: Iterable[ProcessInfo], root_pid: int) -> set[int]:
    """All pids below `root_pid` (not including it)."""
    children: dict[int, list[int]] = {}
    for process in processes:
        children.setdefault(process.ppid, []).append(process.pid)
    found: set[int] = set()
    stack = list(children.get(root_pid, ()))
    while stack:
        pid = stack.pop()
        if pid not in found:
            found.add(pid)
            stack.extend(children.get(pid, ()))
    return found


def select_workload(processes: Iterable[ProcessInfo], own_pid: int) -> list[ProcessInfo]:
    """Every process except the sidecar's own tree and the pod's pause process."""
    processes = list(processes)
    excluded = own_tree(processes, own_pid)
    return [
        process for process in processes if process.pid not in excluded and not process.is_pause
    ]


def select_tree(processes: Iterable[ProcessInfo], root_pid: int) -> list[ProcessInfo]:
    """The process `root_pid` and all its descendants (`--pid`)."""
    processes = list(processes)
    wanted = descendants(processes, root_pid) | {root_pid}
    return [process for process in processes if process.pid in wanted]


def main_pid(workload: Iterable[ProcessInfo]) -> int | None:
    """The workload's main process: the oldest live one whose parent is not in the workload."""
    workload = [process for process in workload if not process.zombie]
    pids = {process.pid for process in workload}
    roots = [process for process in workload if process.ppid not in pids]
    if not roots:
        return None
    return min(roots, key=lambda process: (process.started, process.pid)).pid
