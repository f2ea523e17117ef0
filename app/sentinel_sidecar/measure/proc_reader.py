"""The workload's processes and their usage from /proc, read statefully and cheaply.

The per-process files (`stat` for parentage, CPU times and RSS; `io`; `smaps_rollup` for PSS)
are read with one `pread` each on descriptors kept open: psutil's per-call pid-reuse checks
and line parsing cost three to ten times more per process (see docs/PERFORMANCE.md); pid reuse
is caught by the start time in the cache keys instead. Node-level figures are node.py's."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sentinel_sidecar.measure.cgroup import parse_proc_cgroup
from sentinel_sidecar.measure.process import ProcessInfo, ProcessUsage
from sentinel_sidecar.measure.procfs import clock_ticks, fd_budget, parse_io, parse_pss, parse_stat
from sentinel_sidecar.measure.values import ReadErrors

_T = TypeVar("_T")
# PSS (smaps_rollup) makes the kernel walk the page tables: its cost grows with the resident
# size (docs/PERFORMANCE.md). While the set of processes is stable it is re-read at least this
# often per process; in between, RSS changes are added to the last PSS.
PSS_REFRESH_SECONDS = 30.0
# `io` is read again only for a process whose `stat` line changed since its last read (CPU,
# faults, state, RSS: what doing IO moves), and at least every this many ticks for each
# process (staggered by pid): a sleeping process's IO is delayed at most that long, never
# lost (the counters are cumulative). Most processes of a workload are idle most ticks.
IO_EVERY_TICKS = 5


@dataclass(eq=False)
class _Memory:
    pss: int | None
    rss_at_pss: int
    refresh_at: float


class ProcReader:
    """Reads /proc under `proc_root`: the processes and their usage. At most `fds` /proc files
    stay open (default: what the open-files limit leaves, `procfs.fd_budget`; the assembler
    raises that limit first)."""

    def __init__(
        self,
        proc_root: Path,
        monotonic: Callable[[], float] = time.monotonic,
        errors: ReadErrors | None = None,
        fds: int | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.errors = errors or ReadErrors()
        self._clock_ticks = clock_ticks()
        self._page_size = os.sysconf("SC_PAGE_SIZE")
        self._monotonic = monotonic
        self._memberships: dict[str, dict[str, str]] = {}
        self._environment: dict[tuple[str, str], str | None] = {}
        self._memory: dict[str, _Memory] = {}
        # Per process: the tick and stat line its IO was read with, and that IO.
        self._io: dict[str, tuple[int, bytes, int | None, int | None]] = {}
        self._tick = 0
        self._denied: dict[str, set[str]] = {"io": set(), "smaps_rollup": set()}
        # The last stat line read per pid and what it parsed to: most processes of a workload
        # are idle most ticks, and an unchanged line need not be parsed again.
        self._parsed: dict[int, tuple[bytes, ProcessInfo | None]] = {}
        self._fds: dict[tuple[int, str], int] = {}
        self._fd_budget = fd_budget() if fds is None else fds

    def _read(self, pid: int, name: str) -> bytes:
        """One small /proc file in a single read; OSError when it is gone or denied.

        The file stays open and is re-read with pread: a /proc file regenerates at offset 0,
        and open + close cost more than the read. An fd refers to the process it was opened
        for, so after a pid is reused it fails (ESRCH) instead of reading the new process.
        """
        key = (pid, name)
        fd = self._fds.get(key)
        if fd is not None:
            try:
                return os.pread(fd, 4096, 0)
            except OSError:
                del self._fds[key]
                os.close(fd)
        fd = os.open(f"{self.proc_root}/{pid}/{name}", os.O_RDONLY)
        try:
            data = os.pread(fd, 4096, 0)
        except OSError:
            os.close(fd)
            raise
        if len(self._fds) < self._fd_budget:
            self._fds[key] = fd
        else:
            os.close(fd)
        return data

    def close(self) -> None:
        """Close the cached /proc file descriptors."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _stat(self, pid: int) -> ProcessInfo | None:
        try:
            data = self._read(pid, "stat")
        except OSError:
            return None
        last = self._parsed.get(pid)
        if last is not None and last[0] == data:
            return last[1]
        try:
            info = parse_stat(pid, data, self._clock_ticks, self._page_size)
        except (ValueError, IndexError) as exc:
            self.errors.report("/proc/<pid>/stat", exc, pid=pid)
            info = None
        self._parsed[pid] = (data, info)
        return info

    def _info(self, pid: int, fresh: bool) -> ProcessInfo | None:
        """The process as last parsed when not `fresh` and known, else read now."""
        last = None if fresh else self._parsed.get(pid)
        return (last[1] if last else None) or self._stat(pid)

    def pids(self) -> list[int]:
        """Every pid visible in /proc."""
        return sorted(int(name) for name in os.listdir(self.proc_root) if name.isdigit())

    def processes(
        self, pids: Iterable[int] | None = None, *, fresh: bool = True
    ) -> list[ProcessInfo]:
        """The user-space processes among `pids` (default: all), zombies included; kernel
        threads and vanished pids skipped. Caches of processes not listed are dropped.

        `fresh=False` re-reads only pids not seen before: for callers that need identity and
        parentage but not the CPU times (the cgroup path).
        """
        self._tick += 1
        listed = self.pids() if pids is None else list(pids)
        found = [info for pid in listed if (info := self._info(pid, fresh)) is not None]
        listed_pids = set(listed)
        for gone in [file for file in self._fds if file[0] not in listed_pids]:
            os.close(self._fds.pop(gone))
        for pid in [pid for pid in self._parsed if pid not in listed_pids]:
            del self._parsed[pid]
        live = {process.key for process in found}
        for cache in (self._memberships, self._memory, self._io):
            for key in [key for key in cache if key not in live]:
                del cache[key]
        for denied in self._denied.values():
            denied &= live
        for variable in [variable for variable in self._environment if variable[0] not in live]:
            del self._environment[variable]
        return found

    def membership(self, process: ProcessInfo) -> dict[str, str] | None:
        """The process's cgroups (`/proc/<pid>/cgroup`), cached per process; None if gone."""
        cached = self._memberships.get(process.key)
        if cached is None:
            try:
                # A cgroup path is bytes to the kernel: kept as the file system spells it.
                text = os.fsdecode((self.proc_root / str(process.pid) / "cgroup").read_bytes())
            except OSError:
                return None
            cached = self._memberships[process.key] = parse_proc_cgroup(text)
        return cached

    def environment(self, process: ProcessInfo, name: str) -> str | None:
        """One variable of the process's environment at exec (`/proc/<pid>/environ`, readable
        under the same uid), cached per process; None when unset or unreadable."""
        key = (process.key, name)
        if key not in self._environment:
            value = None
            try:
                with open(f"{self.proc_root}/{process.pid}/environ", "rb") as handle:
                    for entry in handle.read().split(b"\0"):
                        if entry.startswith(name.encode() + b"="):
                            value = entry.split(b"=", 1)[1].decode(errors="replace")
                            break
            except OSError:
                pass
            self._environment[key] = value
        return self._environment[key]

    def usage(self, process: ProcessInfo, *, fresh_pss: bool = False) -> ProcessUsage | None:
        """Memory (PSS, else RSS) and IO of one live process; None when it vanished. IO as
        read in an earlier tick while its `stat` line (read this tick) is unchanged, for at most
        IO_EVERY_TICKS ticks: then a process that vanished since this tick's listing is found
        gone at the next listing instead.

        PSS is re-read when `fresh_pss`, when it is older than PSS_REFRESH_SECONDS, or when it
        was never read; in between, the process's RSS changes are added to the last PSS.
        """
        memory = self._memory_bytes(process, fresh_pss)
        if memory is None:
            return None
        parsed = self._parsed.get(process.pid)
        stat = parsed[0] if parsed is not None else b""
        last = self._io.get(process.key)
        due = (self._tick + process.pid) % IO_EVERY_TICKS == 0
        if last is not None and last[0] < self._tick and last[1] is stat and not due:
            return ProcessUsage(memory, last[2], last[3])  # the same stat line: no IO since
        read_bytes = write_bytes = None
        io = self._optional(process, "io")
        if io is None:
            return None
        if io:
            try:
                read_bytes, write_bytes = parse_io(io)
            except (KeyError, ValueError, IndexError) as exc:
                self.errors.report("/proc/<pid>/io", exc, pid=process.pid)  # IO cells only
        self._io[process.key] = (self._tick, stat, read_bytes, write_bytes)
        return ProcessUsage(memory, read_bytes, write_bytes)

    def _optional(self, process: ProcessInfo, name: str) -> bytes | None:
        """A file that needs ptrace access: b"" when denied (another user's process without
        CAP_SYS_PTRACE; remembered), None when the process is gone."""
        denied = self._denied[name]
        if process.key in denied:
            return b""
        try:
            return self._read(process.pid, name)
        except PermissionError:
            denied.add(process.key)
            return b""
        except OSError:
            return None

    def _memory_bytes(self, process: ProcessInfo, fresh_pss: bool) -> int | None:
        # PSS splits shared and copy-on-write pages between the processes mapping them, so a
        # sum over a forking workload counts each page once, as the kernel charges it.
        rss = process.rss_bytes
        now = self._monotonic()
        memory = self._memory.get(process.key)
        if fresh_pss or memory is None or now >= memory.refresh_at:
            rollup = self._optional(process, "smaps_rollup")
            if rollup is None:
                return None
            pss = self._pss(process, rollup) if rollup else None
            # Staggered, so a stable set of processes does not refresh all on one tick.
            refresh_at = now + PSS_REFRESH_SECONDS * random.uniform(0.5, 1.0)
            memory = self._memory[process.key] = _Memory(pss, rss, refresh_at)
        if memory.pss is None:
            return rss
        return max(0, memory.pss + rss - memory.rss_at_pss)

    def _pss(self, process: ProcessInfo, rollup: bytes) -> int | None:
        try:
            return parse_pss(rollup)
        except (ValueError, IndexError) as exc:
            self.errors.report("/proc/<pid>/smaps_rollup", exc, pid=process.pid)  # then RSS
            return None
