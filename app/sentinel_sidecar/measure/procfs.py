"""/proc text as numbers: the parsers of `/proc/<pid>/stat`, `io` and `smaps_rollup` (pure,
one `pread` of input each; the reader is `proc_reader.py`), and the open-files limit the reader
depends on."""

from __future__ import annotations

import contextlib
import os
import resource

from sentinel_sidecar.measure.process import ProcessInfo
from sentinel_sidecar.measure.values import counter

_PF_KTHREAD = 0x00200000  # /proc/<pid>/stat flags bit of kernel threads


def parse_stat(
    pid: int, data: bytes, clock_ticks: int, page_size: int = 4096
) -> ProcessInfo | None:
    """A `/proc/<pid>/stat` line as ProcessInfo; None for kernel threads and dead tasks."""
    open_paren, close_paren = data.find(b"("), data.rfind(b")")
    fields = data[close_paren + 2 :].split(maxsplit=22)
    if open_paren < 0 or len(fields) < 22 or fields[0] == b"X":
        return None
    if counter(fields[6]) & _PF_KTHREAD:
        return None
    return ProcessInfo(
        pid=pid,
        ppid=counter(fields[1]),
        name=data[open_paren + 1 : close_paren].decode(errors="replace"),
        started=counter(fields[19]) / clock_ticks,
        cpu_user_s=counter(fields[11]) / clock_ticks,
        cpu_system_s=counter(fields[12]) / clock_ticks,
        children_user_s=counter(fields[13]) / clock_ticks,
        children_system_s=counter(fields[14]) / clock_ticks,
        rss_bytes=counter(fields[21]) * page_size,  # the same counter as statm's resident
        zombie=fields[0] == b"Z",
    )


def raise_fd_limit() -> None:
    """Raise the soft limit of open files to the hard one (at most 65,536) where allowed, so
    the proc reader can keep a file open per process. Once, at start (`assemble`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 1 << 16, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):  # not allowed: fewer files stay open
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def fd_budget() -> int:
    """How many /proc files may stay open under the open-files limit in force: the limit
    (at most 65,536) less a reserve for sockets and the spool."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limit = 1 << 16 if soft == resource.RLIM_INFINITY else min(soft, 1 << 16)
    return max(0, limit - 256)


def parse_io(data: bytes) -> tuple[int, int]:
    """`read_bytes` and `write_bytes` of a `/proc/<pid>/io` file."""
    fields = data.split()
    # Every kernel since 2.6.20 writes them 5th and 6th; look them up if one ever does not.
    if fields[8:9] == [b"read_bytes:"] and fields[10:11] == [b"write_bytes:"]:
        return counter(fields[9]), counter(fields[11])
    values = dict(zip(fields[::2], fields[1::2], strict=False))
    return counter(values[b"read_bytes:"]), counter(values[b"write_bytes:"])


def parse_pss(data: bytes) -> int:
    """The `Pss:` line of `/proc/<pid>/smaps_rollup`, in bytes."""
    start = data.find(b"\nPss:")
    if start < 0:
        raise ValueError("smaps_rollup has no Pss line")
    return counter(data[start + 5 : data.index(b"kB", start)].strip()) * 1024


def clock_ticks() -> int:
    """USER_HZ, the unit of v1 cpuacct.stat and of /proc/<pid>/stat times."""
    return os.sysconf("SC_CLK_TCK")
