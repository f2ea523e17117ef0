"""The extended schema's cgroup columns: the workload cgroups' own memory, limits, throttling,
OOM kills and pids (summed over its containers' cgroups), from the workload's reading."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sentinel_sidecar.measure.values import MIB, delta, fmt

if TYPE_CHECKING:
    from sentinel_sidecar.measure.reading import Reading

COLUMNS = (
    "cgroup_memory_working_set_mib",
    "cgroup_memory_peak_mib",
    "cgroup_memory_limit_mib",
    "cgroup_cpu_limit_cores",
    "cgroup_cpu_throttled_seconds",
    "cgroup_oom_kills",
    "cgroup_pids",
)


class CgroupColumns:
    """The `ColumnSet` of the cgroup columns (extended schema only; empty without a cgroup)."""

    def columns(self, extended: bool) -> tuple[str, ...]:
        """The cgroup columns, in the extended schema only."""
        return COLUMNS if extended else ()

    def cells(self, before: Reading, after: Reading, extended: bool) -> list[str]:
        """Gauges of `after`; throttling and OOM kills since `before` (same cgroups only)."""
        if not extended:
            return []
        groups = after.workload.cgroups
        if not groups:
            return [""] * len(COLUMNS)
        previous = before.workload.cgroups
        throttled_before = _sum([group.cpu_throttled_s for group in previous])
        throttled_after = _sum([group.cpu_throttled_s for group in groups])
        oom_before = _sum([group.oom_kills for group in previous])
        oom_after = _sum([group.oom_kills for group in groups])
        same_groups = len(previous) == len(groups)
        return [
            fmt(_mib(_as_int(_sum([group.memory_working_set_bytes for group in groups])))),
            fmt(_mib(_as_int(_sum([group.memory_peak_bytes for group in groups])))),
            fmt(_mib(_as_int(_sum([group.memory_limit_bytes for group in groups])))),
            fmt(_sum([group.cpu_limit_cores for group in groups])),
            fmt(delta(throttled_before, throttled_after) if same_groups else None, 4),
            fmt(_as_int(delta(oom_before, oom_after)) if same_groups else None),
            fmt(_as_int(_sum([group.pids for group in groups]))),
        ]


def _sum(values: Sequence[float | int | None]) -> float | int | None:
    """Sum, or None when any value is unknown (e.g. one container has no limit)."""
    if not values or any(value is None for value in values):
        return None
    return sum(value for value in values if value is not None)


def _mib(value: int | None) -> float | None:
    return value / MIB if value is not None else None


def _as_int(value: float | int | None) -> int | None:
    return round(value) if value is not None else None
