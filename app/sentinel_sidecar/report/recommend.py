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
class Usage:
    """What one run used: per-row samples and its length."""

    cpu_cores: Sequence[float]
    memory_mib: Sequence[float]
    gpus: Sequence[float]  # process_gpu_utilized per row
    hours: float
    oom_killed: bool = False  # the run ended OOM-killed (exit 137 or a cgroup OOM kill)


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

    def savings(self) -> dict[str, float] | None:
        """Core-hours and GiB-hours the current requests hold beyond the recommendation over
        the runs' hours (negative: the job used more than it asked for); None without them."""
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
        return result


def percentile(values: Sequence[float], percent: float) -> float:
    """The `percent` percentile (nearest rank) of `values`; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(percent / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_quantity(cores: float) -> str:
    """Cores rounded up to 10 millicores (at least 10m): `250m`, `2`."""
    millis = max(10, math.ceil(round(cores * 1000, 6) / 10) * 10)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def memory_quantity(mib: float) -> str:
    """MiB rounded up to 16 Mi (at least 16Mi): `768Mi`, `2Gi`."""
    rounded = max(16, math.ceil(round(mib, 6) / 16) * 16)
    return f"{rounded // 1024}Gi" if rounded % 1024 == 0 else f"{rounded}Mi"


def recommend(
    runs: Sequence[Usage],
    rules: Rules | None = None,
    current: ContainerResources | None = None,
) -> Recommendation:
    """One recommendation over every row of every run (repeated runs of one job)."""
    rules = rules or Rules()
    cpu = [value for run in runs for value in run.cpu_cores]
    memory = [value for run in runs for value in run.memory_mib]
    basis = percentile(cpu, rules.cpu_percentile)
    peak = max(memory, default=0.0)
    request = cpu_quantity(max(basis, rules.min_cpu_cores))
    limit = None
    if rules.cpu_limit_factor is not None:
        limit = cpu_quantity(cpu_cores(request) * rules.cpu_limit_factor)
    gpus = math.ceil(max((value for run in runs for value in run.gpus), default=0.0))
    oom_runs = sum(1 for run in runs if run.oom_killed)
    needed = peak
    flags = []
    if oom_runs:
        needed = max(peak * rules.oom_bump_ratio, peak + rules.oom_min_bump_mib)
        flags.append(f"oom: {oom_runs} of {len(runs)} run(s) ended OOM-killed; memory rests on "
                     f"the peak x {rules.oom_bump_ratio:g}, at least +{rules.oom_min_bump_mib:g} "
                     "MiB")  # fmt: skip
    if len(runs) < rules.min_runs:
        flags.append(f"few runs: {len(runs)} (fewer than {rules.min_runs}); repeated runs of "
                     "the job make a firmer recommendation")  # fmt: skip
    memory_target = max(needed * (1 + rules.memory_margin), rules.min_memory_mib)
    return Recommendation(
        cpu_request=request,
        cpu_limit=limit,
        memory=memory_quantity(memory_target),
        gpus=gpus,
        cpu_basis=basis,
        memory_peak_mib=peak,
        runs=len(runs),
        rows=len(cpu),
        hours=sum(run.hours for run in runs),
        oom_runs=oom_runs,
        flags=tuple(flags),
        current=current or ContainerResources(),
    )
