"""CPU and IO of a changing set of processes, from /proc counters that move to the reaper.

When a process exits, the kernel adds its whole CPU (utime + stime + the cutime/cstime of
what it reaped itself) to its parent's cutime/cstime, and its IO to the parent's io counters,
when the parent waits for it. So over a set of live processes the sum of
utime + stime + cutime + cstime only changes by CPU really used, provided exited processes are
reaped inside the set: the change of that sum between two ticks counts processes that lived
less than one interval. Orphans are reaped by the pod's `pause` (PID 1), whose cutime/cstime
is therefore counted too (its own CPU is not the workload's). A process reaped outside the set
(a container's init, reaped by the runtime's shim) takes its last partial interval with it:
the one loss this method cannot avoid.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from sentinel_sidecar.measure.process import ProcessInfo

# A process that started this long before the previous tick and was not seen in it is not new:
# it was out of sight (another measuring path, a read that failed); it counts from now.
_START_SLACK_S = 0.05


@dataclass(frozen=True, eq=False)
class Counters:
    """Cumulative counters of one source of workload usage (a cgroup, or the /proc-measured
    processes); IO None while unknown."""

    cpu_user_s: float
    cpu_system_s: float
    read_bytes: int | None
    write_bytes: int | None


@dataclass(frozen=True, eq=False)
class _Sample:
    pid: int
    ppid: int
    started: float
    user: float  # utime + cutime
    system: float  # stime + cstime
    read: int | None
    write: int | None


class _Fate(enum.Enum):
    """Where an exited process's counters went."""

    REAPED_INSIDE = "reaped by a process still in the set"
    VIA_PAUSE = "reaped by pause (orphan)"
    AMBIGUOUS = "below a container init that also exited"
    LOST = "a container init, reaped outside the namespace"


class ProcAccounting:
    """Keeps cumulative totals over ticks; `update` takes one tick's processes."""

    def __init__(self) -> None:
        self._previous: dict[str, _Sample] | None = None
        self._sources: dict[str, ProcessInfo] = {}
        self._previous_uptime = 0.0
        self._pause: tuple[str, float, float] | None = None
        # Signed running sums, and what was reported: a child reaped between the reads of its
        # parent and its own stat briefly makes the sum dip; the report never goes back and
        # resumes once the dip is made up, so the total stays exact.
        self._raw = [0.0, 0.0, 0.0, 0.0]
        self._reported = [0.0, 0.0, 0.0, 0.0]

    def update(
        self,
        workload: Iterable[ProcessInfo],
        io: dict[str, tuple[int | None, int | None]],
        *,
        alive: set[str],
        pause: ProcessInfo | None,
        uptime: float,
    ) -> Counters:
        """Totals after this tick. `workload` includes zombies; `io` maps a live process's key
        to its (read, write) bytes; `alive` holds the keys of every process listed this tick,
        workload or not; `uptime` is when the listing began (seconds since boot)."""
        previous = self._previous
        sources = self._sources
        current: dict[str, _Sample] = {}
        self._sources = {}
        for process in workload:
            key = process.key
            self._sources[key] = process
            before = previous.get(key) if previous else None
            read, write = io.get(key, (None, None))
            if process.zombie:  # its io file is gone with its memory; the counters are final
                read, write = (before.read, before.write) if before else (0, 0)
            if (
                before is not None
                and sources.get(key) is process
                and (read, write) == (before.read, before.write)
            ):
                current[key] = before  # the same stat line and IO as last tick: nothing to add
                continue
            current[key] = _Sample(
                process.pid,
                process.ppid,
                process.started,
                process.cpu_user_s + process.children_user_s,
                process.cpu_system_s + process.children_system_s,
                read,
                write,
            )
        pause_gain = self._pause_gain(pause)
        if previous is not None:
            self._add(previous, current, alive, pause, pause_gain)
        self._previous = current
        self._previous_uptime = uptime
        io_known = all(sample.read is not None for sample in current.values())
        user, system, read_total, write_total = self._reported
        return Counters(
            user,
            system,
            round(read_total) if io_known else None,
            round(write_total) if io_known else None,
        )

    def _pause_gain(self, pause: ProcessInfo | None) -> tuple[float, float]:
        """The CPU of orphans that pause reaped since the last tick (0 the first time seen)."""
        before = self._pause
        if pause is None:
            self._pause = None
            return 0.0, 0.0
        self._pause = (pause.key, pause.children_user_s, pause.children_system_s)
        if before is None or before[0] != pause.key:
            return 0.0, 0.0
        return (
            max(0.0, pause.children_user_s - before[1]),
            max(0.0, pause.children_system_s - before[2]),
        )

    def _add(
        self,
        previous: dict[str, _Sample],
        current: dict[str, _Sample],
        alive: set[str],
        pause: ProcessInfo | None,
        pause_gain: tuple[float, float],
    ) -> None:
        delta = [pause_gain[0], pause_gain[1], 0.0, 0.0]
        new_since = self._previous_uptime - _START_SLACK_S
        for key, now in current.items():
            then = previous.get(key)
            if then is now:
                continue
            if then is None:
                if now.started < new_since:
                    continue  # was out of sight, not new: counts from this tick on
                then = _Sample(now.pid, now.ppid, now.started, 0.0, 0.0, 0, 0)
            delta[0] += max(0.0, now.user - then.user)
            delta[1] += max(0.0, now.system - then.system)
            if now.read is not None and then.read is not None:
                delta[2] += max(0, now.read - then.read)
            if now.write is not None and then.write is not None:
                delta[3] += max(0, now.write - then.write)
        by_pid = {sample.pid: (key, sample) for key, sample in previous.items()}
        pause_pid = pause.pid if pause is not None else None
        via_pause = [0.0, 0.0]
        ambiguous = [0.0, 0.0]
        for key, then in previous.items():
            if key in current or key in alive:
                continue  # still there (maybe measured another way now): nothing moved
            fate = _fate(then, key, by_pid, current, alive, pause_pid)
            if fate is _Fate.REAPED_INSIDE:
                delta[0] -= then.user
                delta[1] -= then.system
                delta[2] -= then.read or 0
                delta[3] -= then.write or 0
            elif fate is _Fate.VIA_PAUSE:
                # pause's IO is not read (another user's process): the orphan's IO since the
                # last tick is lost, and what was counted of it stays counted.
                via_pause[0] += then.user
                via_pause[1] += then.system
            elif fate is _Fate.AMBIGUOUS:
                ambiguous[0] += then.user
                ambiguous[1] += then.system
        for index in (0, 1):
            # An ambiguous process went either to its dead parent (lost) or, orphaned first, to
            # pause: what pause gained beyond the known orphans bounds what went there.
            unexplained = max(0.0, pause_gain[index] - via_pause[index])
            delta[index] -= via_pause[index] + min(ambiguous[index], unexplained)
        for index, step in enumerate(delta):
            self._raw[index] += step
            self._reported[index] = max(self._reported[index], self._raw[index])


def _fate(
    sample: _Sample,
    key: str,
    by_pid: dict[int, tuple[str, _Sample]],
    current: dict[str, _Sample],
    alive: set[str],
    pause_pid: int | None,
) -> _Fate:
    """Follow an exited process's parents, as they were at the last tick, to its reaper."""
    seen = {key}
    while True:
        if sample.ppid == pause_pid:
            return _Fate.VIA_PAUSE
        parent = by_pid.get(sample.ppid)
        if parent is None:
            # The chain ends at a container init (its parent is outside the namespace).
            return _Fate.LOST if len(seen) == 1 else _Fate.AMBIGUOUS
        parent_key, parent_sample = parent
        if parent_key in current:
            return _Fate.REAPED_INSIDE
        if parent_key in alive:
            return _Fate.LOST  # reaped by a process measured another way
        if parent_key in seen:
            return _Fate.AMBIGUOUS  # parentage made circular by pid reuse
        seen.add(parent_key)
        sample = parent_sample
