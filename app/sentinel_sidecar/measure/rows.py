"""The CSV columns of each schema, and one row from two consecutive readings."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from sentinel_sidecar.measure.accounting import Counters
from sentinel_sidecar.measure.collect import Reading, WorkloadReading
from sentinel_sidecar.measure.gpu import NO_GPU
from sentinel_sidecar.measure.values import MIB

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

_CGROUP_COLUMNS = (
    "cgroup_memory_working_set_mib",
    "cgroup_memory_peak_mib",
    "cgroup_memory_limit_mib",
    "cgroup_cpu_limit_cores",
    "cgroup_cpu_throttled_seconds",
    "cgroup_oom_kills",
    "cgroup_pids",
)
EXTENDED_COLUMNS = (
    *_CGROUP_COLUMNS,
    "gpu_power_w",  # the workload's GPUs, where NVML has it
    "gpu_energy_j",  # energy those GPUs used in the interval
)


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


def columns(schema: str) -> tuple[str, ...]:
    """The CSV columns of `schema` (`sentinel` or `extended`)."""
    return SENTINEL_COLUMNS + (EXTENDED_COLUMNS if schema == "extended" else ())


def header_line(schema: str) -> str:
    """The CSV header line, newline included."""
    return ",".join(columns(schema)) + "\n"


def _delta(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    return max(0.0, after - before)


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
            step = _delta(then.read_bytes, now.read_bytes)
            read = None if step is None else read + step
        if write is not None:
            step = _delta(then.write_bytes, now.write_bytes)
            write = None if step is None else write + step
    return {"user": user, "system": system, "read": read, "write": write}


def _fmt(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _mib(value: int | None) -> float | None:
    return value / MIB if value is not None else None


def _sum(values: Sequence[float | int | None]) -> float | int | None:
    """Sum, or None when any value is unknown (e.g. one container has no limit)."""
    if not values or any(value is None for value in values):
        return None
    return sum(value for value in values if value is not None)


def make_row(before: Reading, after: Reading, schema: str) -> list[str]:
    """One CSV row (as cells) for the interval between two readings."""
    elapsed = after.monotonic - before.monotonic
    s0, s1 = before.system, after.system
    work = _workload_deltas(before.workload, after.workload)
    system_busy = _delta(s0.cpu_busy_s, s1.cpu_busy_s)
    user, system = work["user"], work["system"]
    process_busy = user + system if user is not None and system is not None else None
    # The interval in which the workload ended still reports what it used.
    has_workload = after.workload.process_count > 0 or before.workload.process_count > 0
    gpu = after.gpu
    no_gpu = gpu is NO_GPU
    cells: list[str] = [
        f"{after.timestamp:.3f}",
        str(s1.processes),
        _fmt(_delta(s0.cpu_user_s, s1.cpu_user_s), 2),
        _fmt(_delta(s0.cpu_system_s, s1.cpu_system_s), 2),
        _fmt(system_busy / elapsed if system_busy is not None and elapsed > 0 else None, 4),
        _fmt(s1.memory_free_mib),
        _fmt(s1.memory_used_mib),
        _fmt(s1.memory_buffers_mib),
        _fmt(s1.memory_cached_mib),
        _fmt(s1.memory_active_mib),
        _fmt(s1.memory_inactive_mib),
        _fmt(_int_delta(s0.disk_read_bytes, s1.disk_read_bytes)),
        _fmt(_int_delta(s0.disk_write_bytes, s1.disk_write_bytes)),
        _fmt(s1.disk_space_total_gb),
        _fmt(s1.disk_space_used_gb),
        _fmt(s1.disk_space_free_gb),
        _fmt(_int_delta(s0.net_recv_bytes, s1.net_recv_bytes)),
        _fmt(_int_delta(s0.net_sent_bytes, s1.net_sent_bytes)),
        *_gpu_cells(gpu.system_usage, gpu.system_vram_mib, gpu.system_utilized, no_gpu),
        _fmt(after.workload.main_pid),
        _fmt(max(0, after.workload.process_count - 1) if has_workload else None),
        _fmt(user if has_workload else None, 4),
        _fmt(system if has_workload else None, 4),
        _fmt(process_busy / elapsed if process_busy is not None and elapsed > 0 else None, 4)
        if has_workload
        else "",
        _fmt(_mib(after.workload.memory_bytes)),
        _fmt(_as_int(work["read"]) if has_workload else None),
        _fmt(_as_int(work["write"]) if has_workload else None),
        *_gpu_cells(gpu.process_usage, gpu.process_vram_mib, gpu.process_utilized, no_gpu),
    ]
    if schema == "extended":
        cells.extend(_extended_cells(before.workload, after.workload))
        energy = _delta(before.gpu.energy_j, gpu.energy_j)
        cells += [_fmt(gpu.power_w, 1), _fmt(energy, 1)]
    return cells


def _gpu_cells(usage: float, vram_mib: float, utilized: int, no_gpu: bool) -> list[str]:
    # Without a GPU: 0, as the reference clients write and Sentinel reads.
    return ["0", "0", "0"] if no_gpu else [_fmt(usage, 4), _fmt(vram_mib), _fmt(utilized)]


def _extended_cells(before: WorkloadReading, after: WorkloadReading) -> list[str]:
    groups = after.cgroups
    if not groups:
        return [""] * len(_CGROUP_COLUMNS)
    throttled_before = _sum([group.cpu_throttled_s for group in before.cgroups])
    throttled_after = _sum([group.cpu_throttled_s for group in groups])
    oom_before = _sum([group.oom_kills for group in before.cgroups])
    oom_after = _sum([group.oom_kills for group in groups])
    same_groups = len(before.cgroups) == len(groups)
    return [
        _fmt(_mib(_as_int(_sum([group.memory_working_set_bytes for group in groups])))),
        _fmt(_mib(_as_int(_sum([group.memory_peak_bytes for group in groups])))),
        _fmt(_mib(_as_int(_sum([group.memory_limit_bytes for group in groups])))),
        _fmt(_sum([group.cpu_limit_cores for group in groups])),
        _fmt(_delta(throttled_before, throttled_after) if same_groups else None, 4),
        _fmt(_as_int(_delta(oom_before, oom_after)) if same_groups else None),
        _fmt(_as_int(_sum([group.pids for group in groups]))),
    ]


def _int_delta(before: int | None, after: int | None) -> int | None:
    return _as_int(_delta(before, after))


def _as_int(value: float | int | None) -> int | None:
    return round(value) if value is not None else None
