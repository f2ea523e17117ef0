"""One Reading per tick: workload discovery, then cgroup counters where the workload's cgroup
is visible and its own, else /proc accounting (accounting.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from sentinel_sidecar.measure.accounting import Counters, ProcAccounting
from sentinel_sidecar.measure.cgroup import (
    CgroupDirs,
    CgroupFormatError,
    CgroupReader,
    CgroupReading,
)
from sentinel_sidecar.measure.node import NodeReader
from sentinel_sidecar.measure.proc_reader import ProcReader
from sentinel_sidecar.measure.process import ProcessInfo, main_pid, select_tree, select_workload
from sentinel_sidecar.measure.reading import Reading, WorkloadReading
from sentinel_sidecar.measure.source import Source, Tick

log = structlog.get_logger(__name__)
PROCESS_GONE = "process gone"  # the reason for a process that vanished mid-read

PROC_KEY = "proc"


def boot_clock() -> float:
    """Seconds since boot, the clock of a process's start time in `/proc/<pid>/stat`."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True, eq=False)
class _Plan:
    """How this tick's workload is measured."""

    by_cgroup: dict[CgroupDirs, list[ProcessInfo]]
    per_process: list[ProcessInfo]
    reasons: list[str]


class Collector:
    """Takes readings: discovers the workload, reads its cgroups where exposed, else /proc."""

    def __init__(
        self,
        procs: ProcReader,
        node: NodeReader,
        cgroups: CgroupReader,
        *,
        pid: int | None = None,
        cgroup: str | None = None,
        own_pid: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        uptime: Callable[[], float] = boot_clock,
        sources: Sequence[Source] = (),
    ) -> None:
        self._procs = procs
        self._node = node
        self._sources = sources
        self._cgroups = cgroups
        self._pid = pid
        self._cgroup = cgroup
        self._cgroup_dirs = cgroups.dirs_for_path(cgroup) if cgroup is not None else None
        self._own_pid = own_pid if own_pid is not None else os.getpid()
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._uptime = uptime
        self._accounting = ProcAccounting()
        self._pss_set: frozenset[str] = frozenset()
        self._measuring: tuple[str, str] | None = None

    def close(self) -> None:
        """Close what its readers hold open (/proc files, NVML)."""
        self._procs.close()
        self._node.close()
        for source in self._sources:
            source.close()

    def read(self) -> Reading:
        """One reading of the node and the workload."""
        uptime = self._uptime()
        pids = self._procs.pids()
        members: list[ProcessInfo] = []
        if self._cgroup_dirs is not None:
            workload = self._read_cgroup(self._cgroup_dirs, members)
            self._say("cgroup", f"--cgroup {self._cgroup}")
        else:
            processes = self._procs.processes(pids)
            if self._pid is not None:
                plan = _Plan({}, select_tree(processes, self._pid), [])
                self._say("proc", f"--pid {self._pid}: that process and its descendants")
                pause = None
            else:
                plan = self._plan(select_workload(processes, self._own_pid), processes)
                pause = next((process for process in processes if process.is_pause), None)
            workload = self._read_processes(plan, processes, pause, uptime)
            members = plan.per_process + [p for group in plan.by_cgroup.values() for p in group]
        system = self._node.read(len(pids))
        tick = Tick(members, self._procs.environment, workload)
        sources = {source.name: source.read(tick) for source in self._sources}
        return Reading(self._wall_clock(), self._monotonic(), system, workload, sources)

    def _say(self, path: str, reason: str) -> None:
        """Log which path measures and why, at the first reading and whenever it changes."""
        if self._measuring != (path, reason):
            self._measuring = (path, reason)
            log.info("measuring", path=path, reason=reason)

    def _read_cgroup(self, dirs: CgroupDirs, members: list[ProcessInfo]) -> WorkloadReading:
        workload = [
            process
            for process in self._procs.processes(self._cgroups.pids(dirs), fresh=False)
            if not process.zombie
        ]
        members.extend(workload)
        reading = self._read_one_cgroup(dirs)
        counters, memory = ({}, None) if reading is None else _cgroup_counters(dirs, reading)
        return WorkloadReading(
            main_pid=main_pid(workload),
            process_count=len(workload),
            counters=counters,
            memory_bytes=memory,
            cgroups=(reading,) if reading is not None else (),
        )

    def _plan(self, workload: list[ProcessInfo], processes: list[ProcessInfo]) -> _Plan:
        """Group the workload by its own visible cgroup; the rest is measured through /proc."""
        sidecar = self._sidecar_cgroups(processes)
        plan = _Plan({}, [], [])
        cgroup_of: dict[int, CgroupDirs | None] = {}
        for process in workload:
            if process.zombie:
                continue  # a zombie's cgroup file reads "/": it goes with its parent, below
            dirs, reason = self._exclusive_cgroup(process, sidecar)
            cgroup_of[process.pid] = dirs
            if dirs is None:
                plan.per_process.append(process)
                if reason not in plan.reasons:
                    plan.reasons.append(reason)
            else:
                plan.by_cgroup.setdefault(dirs, []).append(process)
        for process in workload:
            if process.zombie and cgroup_of.get(process.ppid) is None:
                plan.per_process.append(process)
        cgroup_reasons = [f"own workload cgroup {_describe(dirs)}" for dirs in plan.by_cgroup]
        live = [process for process in plan.per_process if not process.zombie]
        # A process that vanished between listing and reading its cgroup changes no path: the
        # `measuring` line must not flip for a short child that ended mid-read.
        reasons = [reason for reason in plan.reasons if reason != PROCESS_GONE]
        if plan.by_cgroup and live and reasons:
            self._say("mixed", "; ".join(cgroup_reasons + reasons))
        elif plan.by_cgroup:
            self._say("cgroup", "; ".join(cgroup_reasons))
        elif live and reasons:
            self._say("proc", "; ".join(reasons))
        elif not live and self._measuring is None:
            self._say("none", "no workload process visible yet")
        return plan

    def _read_processes(
        self,
        plan: _Plan,
        processes: list[ProcessInfo],
        pause: ProcessInfo | None,
        uptime: float,
    ) -> WorkloadReading:
        counters: dict[str, Counters] = {}
        memory = 0
        readings: list[CgroupReading] = []
        per_process = plan.per_process
        in_cgroups: list[ProcessInfo] = []
        for dirs, members in plan.by_cgroup.items():
            reading = self._read_one_cgroup(dirs)
            if reading is None:
                per_process = per_process + members
                continue
            in_cgroups.extend(members)
            group_counters, group_memory = _cgroup_counters(dirs, reading)
            counters.update(group_counters)
            memory += group_memory or 0
            readings.append(reading)
        live = [process for process in per_process if not process.zombie]
        # A fork or an exit changes how pages are shared: then every PSS is re-read.
        keys = frozenset(process.key for process in live)
        fresh_pss, self._pss_set = keys != self._pss_set, keys
        io: dict[str, tuple[int | None, int | None]] = {}
        for process in live:
            usage = self._procs.usage(process, fresh_pss=fresh_pss)
            if usage is None:
                continue  # vanished between listing and reading
            io[process.key] = (usage.read_bytes, usage.write_bytes)
            memory += usage.memory_bytes
        # Orphans of a cgroup-measured container are in its cgroup's counters already: pause's
        # share counts only while some of the workload is measured through /proc.
        counters[PROC_KEY] = self._accounting.update(
            per_process,
            io,
            alive={process.key for process in processes},
            pause=pause if per_process else None,
            uptime=uptime,
        )
        workload = live + in_cgroups
        return WorkloadReading(
            main_pid=self._pid if self._pid is not None else main_pid(workload),
            process_count=len(workload),
            counters=counters,
            memory_bytes=memory if workload else None,
            cgroups=tuple(readings),
        )

    def _sidecar_cgroups(self, processes: list[ProcessInfo]) -> set[CgroupDirs]:
        own = [process for process in processes if process.pid == self._own_pid]
        found: set[CgroupDirs] = set()
        for process in own:
            membership = self._procs.membership(process)
            if membership is not None:
                found.add(self._cgroups.locate(membership))
        return found

    def _exclusive_cgroup(
        self, process: ProcessInfo, sidecar: set[CgroupDirs]
    ) -> tuple[CgroupDirs | None, str]:
        """The process's cgroup if readable and holding neither the sidecar nor the whole
        node; else None and the reason."""
        membership = self._procs.membership(process)
        if membership is None:
            return None, PROCESS_GONE
        if all(path == "/" for path in membership.values()):
            return None, "workload in the root cgroup (no container cgroup to read)"
        dirs = self._cgroups.locate(membership)
        if dirs.unified is None and dirs.cpuacct is None:
            if any(".." in path.split("/") for path in membership.values()):
                return None, "workload cgroup outside this cgroup namespace"
            return None, "workload cgroup not mounted here"
        if dirs in sidecar:
            return None, "workload cgroup shared with the sidecar"
        return dirs, ""

    def _read_one_cgroup(self, dirs: CgroupDirs) -> CgroupReading | None:
        try:
            return self._cgroups.read(dirs)
        except CgroupFormatError as exc:
            # This tick the cgroup's processes are measured through /proc instead.
            self._procs.errors.report(str(exc.path), exc)
            return None


def _describe(dirs: CgroupDirs) -> str:
    return str(dirs.unified or dirs.cpuacct)


def _cgroup_counters(
    dirs: CgroupDirs, reading: CgroupReading
) -> tuple[dict[str, Counters], int | None]:
    if reading.cpu_user_s is not None and reading.cpu_system_s is not None:
        user, system = reading.cpu_user_s, reading.cpu_system_s
    else:
        user, system = reading.cpu_usage_s or 0.0, 0.0
    key = "cgroup:" + ":".join(str(path) for path in (dirs.unified, dirs.cpuacct, dirs.memory))
    counters = Counters(user, system, reading.io_read_bytes, reading.io_write_bytes)
    return {key: counters}, reading.memory_working_set_bytes
