"""What one tick of sampling holds: the node's figures, the workload's, and each source's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sentinel_sidecar.measure.accounting import Counters
from sentinel_sidecar.measure.cgroup import CgroupReading
from sentinel_sidecar.measure.node import SystemReading


@dataclass(frozen=True, eq=False)
class WorkloadReading:
    """The workload at one instant: counters per source, gauges summed over sources."""

    main_pid: int | None
    process_count: int
    counters: Mapping[str, Counters] = field(default_factory=dict)
    memory_bytes: int | None = None
    cgroups: Sequence[CgroupReading] = ()


@dataclass(frozen=True, eq=False)
class Reading:
    """Everything sampled at one tick."""

    timestamp: float
    monotonic: float
    system: SystemReading
    workload: WorkloadReading
    sources: Mapping[str, object] = field(default_factory=dict)  # by `Source.name`
