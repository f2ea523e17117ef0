"""The workload's usage so far, kept from the very cells of the rows the spool took, so that
`/metrics` and the sums of the spooled rows agree: amounts in an interval are summed (CPU
seconds, bytes), levels are the last row's (memory, processes, GPUs) and memory's peak is the
highest row. Written by the sampling thread only; a scrape reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from sentinel_sidecar.measure.values import MIB

# The summed columns and their total's name; every schema starts with SENTINEL_COLUMNS.
_SUMMED = {
    "process_utime": "cpu_user_seconds",
    "process_stime": "cpu_system_seconds",
    "process_disk_read_bytes": "disk_read_bytes",
    "process_disk_write_bytes": "disk_write_bytes",
    "system_net_recv_bytes": "network_receive_bytes",
    "system_net_sent_bytes": "network_transmit_bytes",
}
_AT = {name: SENTINEL_COLUMNS.index(name) for name in (*_SUMMED, "process_pid",
       "process_children", "process_memory_mib", "process_gpu_usage", "process_gpu_vram_mib",
       "process_gpu_utilized")}  # fmt: skip


@dataclass(eq=False)
class WorkloadUsage:
    """Totals since the agent started (a restart starts them again, as a counter may)."""

    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMMED.values(), 0.0))
    memory_bytes: float | None = None  # the last row's `process_memory_mib`, in bytes
    memory_peak_bytes: float | None = None
    processes: int = 0  # the workload's processes in the last row (0: none seen)
    gpus_used: bool = False  # a row had the workload on a GPU: the GPU figures mean something
    gpu_usage: float | None = None  # GPUs' worth of busy time, the last row's
    gpu_memory_bytes: float | None = None
    gpus_utilized: float | None = None

    def add(self, cells: Sequence[str]) -> None:
        """Count one spooled row (its cells, in schema order)."""
        totals = self.totals
        for column, total in _SUMMED.items():
            cell = cells[_AT[column]]
            if cell:  # rounded: the cells have at most 4 decimals, the sum no float noise
                totals[total] = round(totals[total] + float(cell), 6)
        memory = _number(cells[_AT["process_memory_mib"]])
        if memory is not None:
            memory *= MIB
            self.memory_peak_bytes = max(memory, self.memory_peak_bytes or 0.0)
        self.memory_bytes = memory
        has_pid = bool(cells[_AT["process_pid"]])
        self.processes = 1 + int(cells[_AT["process_children"]] or 0) if has_pid else 0
        self.gpu_usage = _number(cells[_AT["process_gpu_usage"]])
        vram = _number(cells[_AT["process_gpu_vram_mib"]])
        self.gpu_memory_bytes = None if vram is None else vram * MIB
        self.gpus_utilized = _number(cells[_AT["process_gpu_utilized"]])
        self.gpus_used = self.gpus_used or bool(self.gpus_utilized)


def _number(cell: str) -> float | None:
    return float(cell) if cell else None
