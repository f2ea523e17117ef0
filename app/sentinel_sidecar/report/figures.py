"""What the report's engine measured in a run's rows (plain data)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

POINTS = 1500  # per chart series: a week of 1 s rows is drawn from bucket maxima


@dataclass(frozen=True)
class Figures:
    """What one run used, over all its rows. A row stands for the run's mean interval (the
    agent samples at a fixed one): the time-weighted totals are means x the seconds covered."""

    rows: int = 0
    cpu_rows: int = 0  # rows with a CPU figure
    workload_samples: int = 0  # rows in which the workload was seen using CPU or memory
    first: float | None = None  # UNIX time of its first and last row
    last: float | None = None
    cpu_sum: float = 0.0  # cores, over its rows
    memory_sum: float = 0.0  # MiB, over its rows
    memory_peak_mib: float = 0.0
    gpu_sum: float = 0.0  # GPUs busy, over its rows
    gpu_usage_peak: float = 0.0
    gpus_peak: float = 0.0  # most GPUs busy at once
    oom_kills: float = 0.0  # cgroup OOM kills (extended schema)
    read_bytes: float = 0.0
    written_bytes: float = 0.0

    def merged(self, other: Figures) -> Figures:
        """These figures and `other`'s (another part of the same run) as one."""
        if not other.rows:
            return self
        if not self.rows:
            return other
        return Figures(
            self.rows + other.rows,
            self.cpu_rows + other.cpu_rows,
            self.workload_samples + other.workload_samples,
            _either(min, self.first, other.first),
            _either(max, self.last, other.last),
            self.cpu_sum + other.cpu_sum,
            self.memory_sum + other.memory_sum,
            max(self.memory_peak_mib, other.memory_peak_mib),
            self.gpu_sum + other.gpu_sum,
            max(self.gpu_usage_peak, other.gpu_usage_peak),
            max(self.gpus_peak, other.gpus_peak),
            self.oom_kills + other.oom_kills,
            self.read_bytes + other.read_bytes,
            self.written_bytes + other.written_bytes,
        )

    @property
    def hours(self) -> float:
        """From the first row to the last."""
        if self.first is None or self.last is None:
            return 0.0
        return (self.last - self.first) / 3600

    @property
    def interval(self) -> float:
        """Seconds between rows, on average (1 for a run of one row)."""
        if self.rows < 2:
            return 1.0
        return self.hours * 3600 / (self.rows - 1)

    @property
    def seconds(self) -> float:
        """The seconds its rows cover."""
        return self.rows * self.interval if self.rows else 0.0

    def _hours_of(self, total: float) -> float:
        return total / self.rows * self.seconds / 3600 if self.rows else 0.0

    @property
    def core_hours(self) -> float:
        return self._hours_of(self.cpu_sum)

    @property
    def gib_hours(self) -> float:
        return self._hours_of(self.memory_sum) / 1024

    @property
    def gpu_hours(self) -> float:
        return self._hours_of(self.gpu_sum)


@dataclass(frozen=True)
class Series:
    """A run's chart series, at most POINTS points each: minutes since its first row, and the
    bucket maxima of CPU (cores), memory (MiB), disk read and written (MB/s), GPU (GPUs)."""

    minutes: list[float] = field(default_factory=list)
    cpu: list[float | None] = field(default_factory=list)
    memory: list[float | None] = field(default_factory=list)
    read: list[float | None] = field(default_factory=list)
    written: list[float | None] = field(default_factory=list)
    gpu: list[float | None] = field(default_factory=list)


@dataclass(frozen=True)
class Measured:
    """A run as the engine read it: its figures, how many of its rows had each CPU figure at
    the recommendation's resolution (10 millicores, rounded up), the chunks it left out or
    read in part and why, and its chart series when asked for."""

    figures: Figures
    cpu_counts: dict[float, int] = field(default_factory=dict)
    troubles: tuple[str, ...] = ()  # "<chunk>: left out (why)" or "...: read without ..."
    series: Series | None = None


def _either(
    pick: Callable[[float, float], float], a: float | None, b: float | None
) -> float | None:
    """`pick(a, b)`, or the one that is not None."""
    if a is None or b is None:
        return b if a is None else a
    return pick(a, b)
