"""The plug-in points of measuring. A `Source` is read once per tick beside the workload's
processes (GPU through NVML is one); its reading lands in `Reading.sources` under its name. A
`ColumnSet` fills named CSV columns from two consecutive readings (a source's, or the
workload's own, as the extended cgroup columns do). A new source is one module holding both,
listed in `rows.COLUMN_SETS` and in `assemble`'s sources; the schemas' column lists
(`rows.SENTINEL_COLUMNS`, `rows.EXTENDED_COLUMNS`) say where its columns sit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sentinel_sidecar.measure.process import ProcessInfo
    from sentinel_sidecar.measure.reading import Reading, WorkloadReading


@dataclass(frozen=True, eq=False)
class Tick:
    """What a source may look at in one tick: the workload's processes (live and zombie),
    their environment variables, and the workload's reading."""

    members: Sequence[ProcessInfo]
    environment: Callable[[ProcessInfo, str], str | None]
    workload: WorkloadReading


class Source(Protocol):
    """Figures read once per tick beside /proc and the cgroups."""

    name: str  # the key of its readings in `Reading.sources`

    def read(self, tick: Tick) -> object:
        """This tick's reading; never raises for a device that went away (it counts the
        error and reads what is left)."""
        ...

    def close(self) -> None:
        """Release what it holds (a library, a handle)."""
        ...


class ColumnSet(Protocol):
    """Named CSV columns and their cells for the interval between two readings."""

    def columns(self, extended: bool) -> tuple[str, ...]:
        """The columns it fills in the sentinel schema (`extended` False) or the extended."""
        ...

    def cells(self, before: Reading, after: Reading, extended: bool) -> list[str]:
        """One cell per column of `columns(extended)`, in that order."""
        ...
