"""The CSV columns of each schema, and one row from two consecutive readings: the node's and
the workload's cells here, the rest from the column sets (`source.ColumnSet`) of GPU and
cgroups."""

from __future__ import annotations

from enum import StrEnum

from sentinel_sidecar.measure import cgroup_columns, gpu
from sentinel_sidecar.measure.accounting import Counters
from sentinel_sidecar.measure.cgroup_columns import CgroupColumns
from sentinel_sidecar.measure.gpu import GpuColumns
from sentinel_sidecar.measure.reading import Reading, WorkloadReading
from sentinel_sidecar.measure.source import ColumnSet
from sentinel_sidecar.measure.values import MIB, delta, fmt


class Schema(StrEnum):
    """The CSV columns: the 32 Sentinel takes, or those plus the workload cgroup's."""

    SENTINEL = "sentinel"
    EXTENDED = "extended"


SENTINEL_COLUMNS = (
    "timestamp",
    "system_processes",
    "system_utime",
    "system_stime",
    "system_cpu_usage",
    "system_memory_free_mib",
    "system_memory_used_mib",
    "system_memory_buffers_mib",
    "system_memory_cached_mib",
    "system_memory_active_mib",
    "system_memory_inactive_mib",
    "system_disk_read_bytes",
    "system_disk_write_bytes",
    "system_disk_space_total_gb",
    "system_disk_space_used_gb",
    "system_disk_space_free_gb",
    "system_net_recv_bytes",
    "system_net_sent_bytes",
    "system_gpu_usage",
    "system_gpu_vram_mib",
    "system_gpu_utilized",
    "process_pid",
    "process_children",
    "process_utime",
    "process_stime",
    "process_cpu_usage",
    "process_memory_mib",
    "process_disk_read_bytes",
    "process_disk_write_bytes",
    "process_gpu_usage",
    "process_gpu_vram_mib",
    "process_gpu_utilized",
)

EXTENDED_COLUMNS = (*cgroup_columns.COLUMNS, *gpu.EXTENDED_COLUMNS)

# Every column not filled here comes from exactly one of these (a test checks).
COLUMN_SETS: tuple[ColumnSet, ...] = (GpuColumns(), CgroupColumns())


class Fold(StrEnum):
    """How a column of two consecutive rows becomes the column of one row covering both."""

    SUM = "sum"  # amounts in the interval: CPU-seconds, bytes, joules, events
    MAX = "max"  # peaks and gauges where the highest counts: memory in use, processes
    MIN = "min"  # free memory: its low point
    MEAN = "mean"  # rates (cores, GPUs, watts), weighted by each row's interval
    LAST = "last"  # the end of the interval: timestamp, pid, limits, sizes


_SUMMED = ("utime", "stime", "_bytes", "_seconds", "oom_kills", "energy_j")
_MEANS = ("cpu_usage", "gpu_usage", "power_w")
_LAST = ("timestamp", "process_pid", "limit", "disk_space", "buffers", "cached", "inactive")


def fold(column: str) -> Fold:
    """The `Fold` of a column, from its name (every column has one; a test checks)."""
    if column == "system_memory_free_mib":
        return Fold.MIN
    if column.endswith(_SUMMED):
        return Fold.SUM
    if column.endswith(_MEANS):
        return Fold.MEAN
    if any(part in column for part in _LAST):
        return Fold.LAST
    return Fold.MAX


_SCHEMA_COLUMNS = {Schema.EXTENDED: SENTINEL_COLUMNS + EXTENDED_COLUMNS}


def columns(schema: Schema) -> tuple[str, ...]:
    """The CSV columns of `schema` (made once: a row asks for them every tick)."""
    return _SCHEMA_COLUMNS.get(schema, SENTINEL_COLUMNS)


def header_line(schema: Schema) -> str:
    """The CSV header line, newline included."""
    return ",".join(columns(schema)) + "\n"


_NEW_SOURCE = Counters(0.0, 0.0, 0, 0)


def _workload_deltas(before: WorkloadReading, after: WorkloadReading) -> dict[str, float | None]:
    """Sum of per-source increases; a source new since `before` counts from zero. IO is None
    when any source's IO is unknown. (A plain loop: it runs once per process and tick.)"""
    user = system = 0.0
    read: float | None = 0.0
    write: float | None = 0.0
    previous = before.counters
    for key, now in after.counters.items():
        then = previous.get(key, _NEW_SOURCE)
        user += max(0.0, now.cpu_user_s - then.cpu_user_s)
        system += max(0.0, now.cpu_system_s - then.cpu_system_s)
        if read is not None:
            step = delta(then.read_bytes, now.read_bytes)
            read = None if step is None else read + step
        if write is not None:
            step = delta(then.write_bytes, now.write_bytes)
            write = None if step is None else write + step
    return {"user": user, "system": system, "read": read, "write": write}


def _mib(value: int | None) -> float | None:
    return value / MIB if value is not None else None


_CORE_COLUMNS = tuple(
    name for name in SENTINEL_COLUMNS if not any(name in cs.columns(False) for cs in COLUMN_SETS)
)


def make_row(before: Reading, after: Reading, schema: Schema) -> list[str]:
    """One CSV row (as cells) for the interval between two readings."""
    elapsed = after.monotonic - before.monotonic
    s0, s1 = before.system, after.system
    work = _workload_deltas(before.workload, after.workload)
    system_busy = delta(s0.cpu_busy_s, s1.cpu_busy_s)
    user, system = work["user"], work["system"]
    process_busy = user + system if user is not None and system is not None else None
    # The interval in which the workload ended still reports what it used.
    has_workload = after.workload.process_count > 0 or before.workload.process_count > 0
    core = (
        f"{after.timestamp:.3f}",
        str(s1.processes),
        fmt(delta(s0.cpu_user_s, s1.cpu_user_s), 2),
        fmt(delta(s0.cpu_system_s, s1.cpu_system_s), 2),
        fmt(system_busy / elapsed if system_busy is not None and elapsed > 0 else None, 4),
        fmt(s1.memory_free_mib),
        fmt(s1.memory_used_mib),
        fmt(s1.memory_buffers_mib),
        fmt(s1.memory_cached_mib),
        fmt(s1.memory_active_mib),
        fmt(s1.memory_inactive_mib),
        fmt(_int_delta(s0.disk_read_bytes, s1.disk_read_bytes)),
        fmt(_int_delta(s0.disk_write_bytes, s1.disk_write_bytes)),
        fmt(s1.disk_space_total_gb),
        fmt(s1.disk_space_used_gb),
        fmt(s1.disk_space_free_gb),
        fmt(_int_delta(s0.net_recv_bytes, s1.net_recv_bytes)),
        fmt(_int_delta(s0.net_sent_bytes, s1.net_sent_bytes)),
        fmt(after.workload.main_pid),
        fmt(max(0, after.workload.process_count - 1) if has_workload else None),
        fmt(user if has_workload else None, 4),
        fmt(system if has_workload else None, 4),
        fmt(process_busy / elapsed if process_busy is not None and elapsed > 0 else None, 4)
        if has_workload
        else "",
        fmt(_mib(after.workload.memory_bytes)),
        fmt(_as_int(work["read"]) if has_workload else None),
        fmt(_as_int(work["write"]) if has_workload else None),
    )
    cells = dict(zip(_CORE_COLUMNS, core, strict=True))
    extended = schema == Schema.EXTENDED
    for column_set in COLUMN_SETS:
        names = column_set.columns(extended)
        cells.update(zip(names, column_set.cells(before, after, extended), strict=True))
    return [cells[name] for name in columns(schema)]


def _int_delta(before: int | None, after: int | None) -> int | None:
    return _as_int(delta(before, after))


def _as_int(value: float | int | None) -> int | None:
    return round(value) if value is not None else None
