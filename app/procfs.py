"""Workload discovery in the shared pid namespace and /proc figures, read with psutil."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil

from app.cgroup import parse_proc_cgroup

_T = TypeVar("_T")
_MIB = 1024 * 1024
_GB = 1e9
_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, FileNotFoundError, ProcessLookupError)


@dataclass(frozen=True)
class ProcessInfo:
    """One live process as seen in /proc."""

    pid: int
    ppid: int
    name: str
    create_time: float

    @property
    def key(self) -> str:
        """Identity that survives pid reuse."""
        return f"pid:{self.pid}:{self.create_time:.2f}"


@dataclass(frozen=True)
class ProcessUsage:
    """Cumulative CPU and IO of one process, and its memory now."""

    cpu_user_s: float
    cpu_system_s: float
    memory_bytes: int
    read_bytes: int | None
    write_bytes: int | None


@dataclass(frozen=True)
class SystemReading:
    """Node-level figures as seen from the pod; counters cumulative, None where unreadable."""

    processes: int
    cpu_user_s: float | None
    cpu_system_s: float | None
    cpu_busy_s: float | None
    memory_free_mib: float | None
    memory_used_mib: float | None
    memory_buffers_mib: float | None
    memory_cached_mib: float | None
    memory_active_mib: float | None
    memory_inactive_mib: float | None
    disk_read_bytes: int | None
    disk_write_bytes: int | None
    disk_space_total_gb: float | None
    disk_space_used_gb: float | None
    disk_space_free_gb: float | None
    net_recv_bytes: int | None
    net_sent_bytes: int | None


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
    """Every process except the sidecar's own tree, the pod's pause process and kernel threads."""
    processes = list(processes)
    excluded = own_tree(processes, own_pid)
    kernel = {2} | descendants(processes, 2)
    return [
        process
        for process in processes
        if process.pid not in excluded
        and process.pid not in kernel
        and not (process.pid == 1 and process.name == "pause")
    ]


def select_tree(processes: Iterable[ProcessInfo], root_pid: int) -> list[ProcessInfo]:
    """The process `root_pid` and all its descendants (`--pid`)."""
    processes = list(processes)
    wanted = descendants(processes, root_pid) | {root_pid}
    return [process for process in processes if process.pid in wanted]


def main_pid(workload: Iterable[ProcessInfo]) -> int | None:
    """The workload's main process: the oldest one whose parent is not part of the workload."""
    workload = list(workload)
    pids = {process.pid for process in workload}
    roots = [process for process in workload if process.ppid not in pids]
    if not roots:
        return None
    return min(roots, key=lambda process: (process.create_time, process.pid)).pid


class ProcReader:
    """Reads /proc under `proc_root` through psutil."""

    def __init__(self, proc_root: Path, disk_path: Path = Path("/")) -> None:
        self.proc_root = proc_root
        self.disk_path = disk_path
        # psutil keeps its /proc location in a module global; one agent reads one /proc.
        psutil.PROCFS_PATH = str(proc_root)
        self._handles: dict[int, psutil.Process] = {}
        self._memberships: dict[str, dict[str, str]] = {}

    def processes(self) -> list[ProcessInfo]:
        """Every live (not zombie) process; processes that vanish while listed are skipped."""
        found: list[ProcessInfo] = []
        handles: dict[int, psutil.Process] = {}
        for pid in psutil.pids():
            handle = self._handles.get(pid)
            try:
                if handle is None or not handle.is_running():
                    handle = psutil.Process(pid)
                with handle.oneshot():
                    if handle.status() == psutil.STATUS_ZOMBIE:
                        continue
                    info = ProcessInfo(pid, handle.ppid(), handle.name(), handle.create_time())
            except (*_GONE, psutil.AccessDenied):
                continue
            handles[pid] = handle
            found.append(info)
        self._handles = handles
        live = {process.key for process in found}
        self._memberships = {k: v for k, v in self._memberships.items() if k in live}
        return found

    def membership(self, process: ProcessInfo) -> dict[str, str] | None:
        """The process's cgroups (`/proc/<pid>/cgroup`), cached per process; None if gone."""
        cached = self._memberships.get(process.key)
        if cached is None:
            try:
                text = (self.proc_root / str(process.pid) / "cgroup").read_text()
            except OSError:
                return None
            cached = self._memberships[process.key] = parse_proc_cgroup(text)
        return cached

    def usage(self, pid: int) -> ProcessUsage | None:
        """CPU, memory (PSS, else RSS) and IO of one process; None when it vanished."""
        handle = self._handles.get(pid) or psutil.Process(pid)
        try:
            with handle.oneshot():
                times = handle.cpu_times()
                memory = _memory_bytes(handle)
                read_bytes: int | None = None
                write_bytes: int | None = None
                try:
                    io = handle.io_counters()
                    read_bytes, write_bytes = io.read_bytes, io.write_bytes
                except psutil.AccessDenied:
                    pass  # another user's process without CAP_SYS_PTRACE: IO unknown
        except (*_GONE, psutil.AccessDenied):
            return None
        return ProcessUsage(times.user, times.system, memory, read_bytes, write_bytes)

    def system(self, pids_count: int) -> SystemReading:
        """Node-level figures; each one None when its /proc file is unreadable."""
        cpu = _try(psutil.cpu_times)
        memory = _try(psutil.virtual_memory)
        disk = _try(psutil.disk_io_counters)
        space = _try(lambda: psutil.disk_usage(str(self.disk_path)))
        net = _try(lambda: psutil.net_io_counters(pernic=True))
        nics = [counters for name, counters in (net or {}).items() if name != "lo"]
        return SystemReading(
            processes=pids_count,
            cpu_user_s=cpu.user + cpu.nice if cpu else None,
            cpu_system_s=cpu.system + cpu.irq + cpu.softirq if cpu else None,
            cpu_busy_s=sum(cpu) - cpu.idle - cpu.iowait - cpu.guest - cpu.guest_nice
            if cpu
            else None,
            memory_free_mib=memory.free / _MIB if memory else None,
            memory_used_mib=memory.used / _MIB if memory else None,
            memory_buffers_mib=memory.buffers / _MIB if memory else None,
            memory_cached_mib=memory.cached / _MIB if memory else None,
            memory_active_mib=memory.active / _MIB if memory else None,
            memory_inactive_mib=memory.inactive / _MIB if memory else None,
            disk_read_bytes=disk.read_bytes if disk else None,
            disk_write_bytes=disk.write_bytes if disk else None,
            disk_space_total_gb=space.total / _GB if space else None,
            disk_space_used_gb=space.used / _GB if space else None,
            disk_space_free_gb=space.free / _GB if space else None,
            net_recv_bytes=sum(n.bytes_recv for n in nics) if net is not None else None,
            net_sent_bytes=sum(n.bytes_sent for n in nics) if net is not None else None,
        )


def _memory_bytes(handle: psutil.Process) -> int:
    # PSS splits shared pages between the processes sharing them, so a sum over a forking
    # workload is not counted twice; smaps needs ptrace access, RSS does not.
    try:
        return int(handle.memory_full_info().pss)
    except (psutil.AccessDenied, AttributeError):
        return int(handle.memory_info().rss)


def _try(read: Callable[[], _T]) -> _T | None:
    try:
        return read()
    except (OSError, RuntimeError, ValueError):
        return None


def clock_ticks() -> int:
    """USER_HZ, the unit of v1 cpuacct.stat."""
    return os.sysconf("SC_CLK_TCK")
