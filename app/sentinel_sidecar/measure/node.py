"""Node-level figures of every row: CPU, memory, disk and network counters of the whole node.

Each tick reads four /proc files through descriptors kept open (`pread` at offset 0) and parses
them here; psutil's readers open, line-parse and post-process every file on every call, which
cost about 0.7 ms a tick, more than the whole workload of a small pod (docs/PERFORMANCE.md).
Disk space is one statvfs, as psutil.disk_usage does.
The semantics are psutil's: memory `used` is total - available, as `free` shows; disk counters
sum whole devices (those in `/sys/block`), not partitions; network counters skip `lo`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Container
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sentinel_sidecar.measure.values import MIB, ReadErrors, counter

_T = TypeVar("_T")

_GB = 1e9
_READ_SIZE = 65536
_SECTOR = 512  # /proc/diskstats counts 512-byte sectors whatever the device's block size


@dataclass(frozen=True, eq=False)
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


def parse_cpu(data: bytes, clock_ticks: int) -> tuple[float, float, float]:
    """User (+nice), system (+irq, softirq) and busy CPU seconds from `/proc/stat`'s cpu line."""
    if not data.startswith(b"cpu "):
        raise ValueError("/proc/stat does not start with the cpu line")
    values = [counter(value) for value in data[: data.index(b"\n")].split()[1:]]
    values += [0] * (10 - len(values))  # steal, guest, guest_nice are absent on old kernels
    user, nice, system, idle, iowait, irq, softirq, _steal, guest, guest_nice = values[:10]
    busy = sum(values[:10]) - idle - iowait - guest - guest_nice
    return (user + nice) / clock_ticks, (system + irq + softirq) / clock_ticks, busy / clock_ticks


@dataclass(frozen=True, eq=False)
class Memory:
    """`/proc/meminfo` figures in bytes, as psutil.virtual_memory() reports them."""

    free: int
    used: int
    buffers: int
    cached: int
    active: int
    inactive: int


def parse_meminfo(data: bytes) -> Memory:
    """`/proc/meminfo`: `used` = total - available, `cached` includes reclaimable slab."""
    values = {}
    for line in data.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            values[fields[0]] = counter(fields[1]) * 1024
    total, free = values[b"MemTotal:"], values[b"MemFree:"]
    available = values.get(b"MemAvailable:") or free
    return Memory(
        free=free,
        used=total - min(max(available, 0), total),
        buffers=values.get(b"Buffers:", 0),
        cached=values.get(b"Cached:", 0) + values.get(b"SReclaimable:", 0),
        active=values.get(b"Active:", 0),
        inactive=values.get(b"Inactive:", 0),
    )


def parse_diskstats(data: bytes, is_disk: Callable[[str], bool]) -> tuple[int, int]:
    """Bytes read and written, summed over whole devices (`is_disk`) of `/proc/diskstats`."""
    read = written = 0
    for line in data.splitlines():
        fields = line.split()
        if len(fields) < 7 or not is_disk(fields[2].decode(errors="replace")):
            continue
        if len(fields) == 7:  # a partition line of old kernels: reads, sectors, writes, sectors
            read += counter(fields[4]) * _SECTOR
            written += counter(fields[6]) * _SECTOR
        else:
            read += counter(fields[5]) * _SECTOR
            written += counter(fields[9]) * _SECTOR
    return read, written


def parse_net_dev(data: bytes, skip: Container[bytes] = (b"lo",)) -> tuple[int, int]:
    """Bytes received and sent, summed over the interfaces of `/proc/net/dev` but `skip`."""
    lines = data.splitlines()
    if not lines or not lines[0].startswith(b"Inter-|"):
        raise ValueError("/proc/net/dev without its header")
    received = sent = 0
    for line in lines[2:]:
        name, _, counters = line.partition(b":")
        fields = counters.split()
        if name.strip() in skip or len(fields) < 9:
            continue
        received += counter(fields[0])
        sent += counter(fields[8])
    return received, sent


def _disk_space(path: Path) -> tuple[int, int, int]:
    """Total, used and free bytes of the filesystem holding `path`, as `df` and
    psutil.disk_usage count them: free is what an unprivileged user may still write."""
    stat = os.statvfs(path)
    total = stat.f_blocks * stat.f_frsize
    return total, total - stat.f_bfree * stat.f_frsize, stat.f_bavail * stat.f_frsize


class NodeReader:
    """Reads the node's figures under `proc_root`, keeping each file open between ticks."""

    def __init__(
        self,
        proc_root: Path,
        clock_ticks: int,
        *,
        disk_path: Path = Path("/"),
        sys_block: Path = Path("/sys/block"),
        errors: ReadErrors | None = None,
    ) -> None:
        self._proc_root = proc_root
        self._errors = errors or ReadErrors()
        self._clock_ticks = clock_ticks
        self._disk_path = disk_path
        self._sys_block = sys_block
        self._fds: dict[str, int] = {}
        self._disks: dict[str, bool] = {}

    def read(self, processes: int) -> SystemReading:
        """One reading; a figure whose file is unreadable or malformed is None."""
        cpu = self._parsed("stat", lambda data: parse_cpu(data, self._clock_ticks))
        memory = self._parsed("meminfo", parse_meminfo)
        disk = self._parsed("diskstats", lambda data: parse_diskstats(data, self._is_disk))
        net = self._parsed("net/dev", parse_net_dev)
        try:
            space = _disk_space(self._disk_path)
        except OSError:
            space = None
        return SystemReading(
            processes=processes,
            cpu_user_s=cpu[0] if cpu else None,
            cpu_system_s=cpu[1] if cpu else None,
            cpu_busy_s=cpu[2] if cpu else None,
            memory_free_mib=memory.free / MIB if memory else None,
            memory_used_mib=memory.used / MIB if memory else None,
            memory_buffers_mib=memory.buffers / MIB if memory else None,
            memory_cached_mib=memory.cached / MIB if memory else None,
            memory_active_mib=memory.active / MIB if memory else None,
            memory_inactive_mib=memory.inactive / MIB if memory else None,
            disk_read_bytes=disk[0] if disk else None,
            disk_write_bytes=disk[1] if disk else None,
            disk_space_total_gb=space[0] / _GB if space else None,
            disk_space_used_gb=space[1] / _GB if space else None,
            disk_space_free_gb=space[2] / _GB if space else None,
            net_recv_bytes=net[0] if net else None,
            net_sent_bytes=net[1] if net else None,
        )

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _parsed(self, name: str, parse: Callable[[bytes], _T]) -> _T | None:
        try:
            return parse(self._read(name))
        except (OSError, ValueError, KeyError, IndexError) as exc:
            self._errors.report(f"/proc/{name}", exc)  # only this file's cells stay empty
            return None

    def _read(self, name: str) -> bytes:
        """The whole file; one pread unless it is longer than 64 KiB (a node with very many
        disks or interfaces)."""
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(self._proc_root / name, os.O_RDONLY)
        chunks, offset = [], 0
        while True:
            chunk = os.pread(fd, _READ_SIZE, offset)
            chunks.append(chunk)
            if len(chunk) < _READ_SIZE:
                return b"".join(chunks)
            offset += len(chunk)

    def _is_disk(self, name: str) -> bool:
        """A whole device (sda, nvme0n1, loop0), not a partition: it has a /sys/block entry."""
        known = self._disks.get(name)
        if known is None:
            known = self._disks[name] = (self._sys_block / name.replace("/", "!")).exists()
        return known
