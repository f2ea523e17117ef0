"""Right-sizing from what runs used (pure): the workload container's requests and limits, as
Kubernetes quantities, by the rules of the Vertical Pod Autoscaler's recommender — including
its answer to an OOM kill (the peak raised by `--oom-bump-ratio`, at least
`--oom-min-bump-mib`) — with floors for CPU and memory, and flags where the runs are few or
ended OOM-killed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sentinel_sidecar.identity.record import ContainerResources, cpu_cores, memory_mib


@dataclass(frozen=True)
class Rules:
    """How the recommendation is made (each a `report` flag)."""

    cpu_percentile: float = 95.0  # CPU request: this percentile of process_cpu_usage
    memory_margin: float = 0.15  # memory request = limit: the peak x (1 + margin)
    cpu_limit_factor: float | None = None  # CPU limit = request x factor; None: no limit
    # After an OOM kill the peak seen is not what the job needs (the VPA recommender's
    # --oom-bump-up-ratio and --oom-min-bump-up-bytes): the peak x ratio, at least + MiB.
    oom_bump_ratio: float = 1.2
    oom_min_bump_mib: float = 100.0
    min_cpu_cores: float = 0.01  # floors of the recommendation (10m, 16Mi: the rounding's own)
    min_memory_mib: float = 16.0
    min_runs: int = 3  # fewer runs than this: the recommendation is flagged


@dataclass(frozen=True)
class Prices:
    """What a core-hour and a GiB-hour of requests cost (`--price-core-hour`,
    `--price-gib-hour`), in the user's currency; None: not given."""

    core_hour: float | None = None
    gib_hour: float | None = None

    @property
    def given(self) -> bool:
        return self.core_hour is not None or self.gib_hour is not None


@dataclass(frozen=True)
class Usage:
    """What a group of runs used, over every row of every run (the report's engine sums it)."""

    # cores at the rules' percentile of every row's process_cpu_usage, each rounded up to 10
    # millicores first (the request's own step: the request is the same as from raw figures)
    cpu_basis: float
    memory_peak_mib: float
    gpus_peak: float  # the most GPUs the workload kept busy at once (process_gpu_utilized)
    runs: int
    rows: int  # rows with a CPU figure
    hours: float
    oom_runs: int = 0  # runs that ended OOM-killed (exit 137, a cgroup OOM kill, OOMKilled)


@dataclass(frozen=True)
class Recommendation:
    """The recommended `resources:` block, what it rests on, and the current one beside it."""

    cpu_request: str
    cpu_limit: str | None
    memory: str  # request = limit
    gpus: int
    cpu_basis: float  # the percentile, in cores
    memory_peak_mib: float
    runs: int
    rows: int
    hours: float
    current: ContainerResources = field(default_factory=ContainerResources)
    oom_runs: int = 0  # runs that ended OOM-killed: memory raised for them
    flags: tuple[str, ...] = ()  # what a reader should know before trusting it

    def resources(self) -> dict[str, Any]:
        """The `resources:` block, ready to paste."""
        requests: dict[str, Any] = {"cpu": self.cpu_request, "memory": self.memory}
        limits: dict[str, Any] = {"memory": self.memory}
        if self.cpu_limit is not None:
            limits["cpu"] = self.cpu_limit
        if self.gpus:
            limits["nvidia.com/gpu"] = self.gpus
        return {"requests": requests, "limits": limits}

    def savings(self, prices: Prices | None = None) -> dict[str, float] | None:
        """Core-hours and GiB-hours the current requests hold beyond the recommendation over
        the runs' hours (negative: the job used more than it asked for), and what they cost
        at `prices`; None without current requests."""
        requests = self.current.get("requests") or {}
        if not requests:
            return None
        result = {}
        if "cpu" in requests:
            spare = cpu_cores(requests["cpu"]) - cpu_cores(self.cpu_request)
            result["core_hours"] = round(spare * self.hours, 3)
        if "memory" in requests:
            spare = memory_mib(requests["memory"]) - memory_mib(self.memory)
            result["gib_hours"] = round(spare / 1024 * self.hours, 3)
        if prices is not None and prices.given:
            cost = (result.get("core_hours", 0.0) * (prices.core_hour or 0.0)
                    + result.get("gib_hours", 0.0) * (prices.gib_hour or 0.0))  # fmt: skip
            result["money"] = round(cost, 2)
        return result


def percentile(counts: Sequence[tuple[float, int]], percent: float) -> float:
    """The `percent` percentile (nearest rank) of the values counted in `counts` ((value,
    how many) pairs in ascending order of value); 0 for none."""
    total = sum(count for _value, count in counts)
    if not total:
        return 0.0
    rank = max(1, math.ceil(percent / 100 * total))
    seen = 0
    for value, count in counts:
        seen += count
        if seen >= rank:
            return value
    return counts[-1][0]


def cpu_quantity(cores: float) -> str:
    """Cores rounded up to 10 millicores (at least 10m): `250m`, `2`."""
    millis = max(10, math.ceil(round(cores * 1000, 6) / 10) * 10)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(mib: float) -> str:
    """MiB rounded up to 16 Mi (at least 16Mi): `768Mi`, `2Gi`."""
    rounded = max(16, math.ceil(round(mib, 6) / 16) * 16)
    return f"{rounded // 1024}Gi" if rounded % 1024 == 0 else f"{rounded}Mi"


def recommend(
    usage: Usage,
    rules: Rules | None = None,
    current: ContainerResources | None = None,
) -> Recommendation:
    """One recommendation from what a group of runs (repeated runs of one job) used."""
    rules = rules or Rules()
    request = cpu_quantity(max(usage.cpu_basis, rules.min_cpu_cores))
    limit = None
    if rules.cpu_limit_factor is not None:
        limit = cpu_quantity(cpu_cores(request) * rules.cpu_limit_factor)
    peak = usage.memory_peak_mib
    needed = peak
    flags = []
    if usage.oom_runs:
        needed = max(peak * rules.oom_bump_ratio, peak + rules.oom_min_bump_mib)
        flags.append(f"oom: {usage.oom_runs} of {usage.runs} run(s) ended OOM-killed; memory "
                     f"rests on the peak x {rules.oom_bump_ratio:g}, at least "
                     f"+{rules.oom_min_bump_mib:g} MiB")  # fmt: skip
    if usage.runs < rules.min_runs:
        flags.append(f"few runs: {usage.runs} (fewer than {rules.min_runs}); repeated runs of "
                     "the job make a firmer recommendation")  # fmt: skip
    memory_target = max(needed * (1 + rules.memory_margin), rules.min_memory_mib)
    return Recommendation(
        cpu_request=request,
        cpu_limit=limit,
        memory=memory_quantity(memory_target),
        gpus=math.ceil(usage.gpus_peak),
        cpu_basis=usage.cpu_basis,
        memory_peak_mib=peak,
        runs=usage.runs,
        rows=usage.rows,
        hours=usage.hours,
        oom_runs=usage.oom_runs,
        flags=tuple(flags),
        current=current or ContainerResources(),
    )
