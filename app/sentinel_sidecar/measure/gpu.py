"""NVML readings of the GPUs (optional extra `gpu`: NVIDIA's own bindings, `nvidia-ml-py`).

NVML is initialised once and read once per tick in-process (no `nvidia-smi` subprocess). The
workload's GPUs are those named in its processes' `NVIDIA_VISIBLE_DEVICES` (UUIDs or indices),
else every GPU the sidecar sees. Per-process figures where NVML's pids are pids the sidecar
sees; otherwise the device figures of the workload's GPUs (a pod gets whole GPUs from the
device plugin). A MIG device counts with its own memory."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from sentinel_sidecar.measure.values import MIB, ReadErrors, delta, fmt

if TYPE_CHECKING:
    from sentinel_sidecar.measure.reading import Reading
    from sentinel_sidecar.measure.source import Tick

log = structlog.get_logger(__name__)


@dataclass(frozen=True, eq=False)
class GpuReading:
    """One tick of GPU figures (DESIGN.md units): usage in GPUs (Σ utilization / 100), VRAM
    in MiB, utilized = GPUs busier than 0 %; power and cumulative energy of the workload's
    GPUs where NVML has them."""

    system_usage: float = 0.0
    system_vram_mib: float = 0.0
    system_utilized: int = 0
    process_usage: float = 0.0
    process_vram_mib: float = 0.0
    process_utilized: int = 0
    power_w: float | None = None
    energy_j: float | None = None


NO_GPU = GpuReading()


class GpuColumns:
    """The `ColumnSet` of the GPU: six columns of the Sentinel schema (0 without a GPU, as
    the reference clients write and Sentinel reads), the power and energy of the extended."""

    def columns(self, extended: bool) -> tuple[str, ...]:
        """The GPU columns of the schema."""
        return _ALL_GPU_COLUMNS if extended else _SENTINEL_GPU_COLUMNS

    def cells(self, before: Reading, after: Reading, extended: bool) -> list[str]:
        """Gauges of `after`, the energy used since `before`."""
        gpu = _gpu_of(after)
        if gpu is NO_GPU:
            cells = ["0"] * len(_SENTINEL_GPU_COLUMNS)
        else:
            cells = [
                fmt(gpu.system_usage, 4), fmt(gpu.system_vram_mib), fmt(gpu.system_utilized),
                fmt(gpu.process_usage, 4), fmt(gpu.process_vram_mib), fmt(gpu.process_utilized),
            ]  # fmt: skip
        if extended:
            energy = delta(_gpu_of(before).energy_j, gpu.energy_j)
            cells += [fmt(gpu.power_w, 1), fmt(energy, 1)]
        return cells


_SENTINEL_GPU_COLUMNS = (
    "system_gpu_usage",
    "system_gpu_vram_mib",
    "system_gpu_utilized",
    "process_gpu_usage",
    "process_gpu_vram_mib",
    "process_gpu_utilized",
)
EXTENDED_COLUMNS = (
    "gpu_power_w",  # the workload's GPUs, where NVML has it
    "gpu_energy_j",  # energy those GPUs used in the interval
)
_ALL_GPU_COLUMNS = _SENTINEL_GPU_COLUMNS + EXTENDED_COLUMNS


def _gpu_of(reading: Reading) -> GpuReading:
    gpu = reading.sources.get(GpuReader.name, NO_GPU)
    assert isinstance(gpu, GpuReading)
    return gpu


@dataclass(eq=False)
class _Device:
    handle: Any
    index: int
    uuid: str
    name: str
    total_mib: float
    migs: list[tuple[Any, str]] = field(default_factory=list)  # (handle, uuid)
    lost: bool = False


@dataclass(eq=False)
class _Figures:
    usage: float = 0.0
    vram_mib: float = 0.0
    utilized: int = 0
    power_w: float | None = None
    energy_j: float | None = None

    def add(self, other: _Figures) -> None:
        self.usage += other.usage
        self.vram_mib += other.vram_mib
        self.utilized += other.utilized
        if other.power_w is not None:
            self.power_w = (self.power_w or 0.0) + other.power_w
        if other.energy_j is not None:
            self.energy_j = (self.energy_j or 0.0) + other.energy_j


def visible_devices(values: Iterable[str | None]) -> set[str] | None:
    """The GPUs named by the workload's `NVIDIA_VISIBLE_DEVICES` values (UUIDs or indices);
    None for every GPU (no value, or `all`)."""
    named: set[str] = set()
    seen = False
    for value in values:
        if value is None:
            continue
        seen = True
        tokens = {token.strip() for token in value.split(",") if token.strip()}
        if "all" in tokens:
            return None
        named |= tokens - {"none", "void"}
    return named if seen else None


class GpuReader:
    """NVML, initialised once; `available` is False (with `reason`) without the bindings, the
    library or a GPU, and then every reading is NO_GPU. The GPU's `Source`."""

    name = "gpu"

    def __init__(self, errors: ReadErrors) -> None:
        self._errors = errors
        self._devices: list[_Device] = []
        self._path: tuple[str, tuple[str, ...]] | None = None
        self._last_sample_us = 0
        self._nvml: Any = None
        try:
            # The driver's library first: without it pynvml (~2 MiB of module) is not loaded.
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError as exc:
            self.reason = f"libnvidia-ml.so.1 cannot be loaded (no NVIDIA driver here): {exc}"
        else:
            try:
                import pynvml  # type: ignore[import-untyped]
            except ImportError:
                self.reason = "nvidia-ml-py is not installed (pip extra `gpu`)"
            else:
                self._nvml = pynvml
                self.reason = self._start()
        log.info("gpu", available=self.available, gpus=len(self._devices), reason=self.reason)

    @property
    def available(self) -> bool:
        """True when NVML answered and sees at least one GPU."""
        return bool(self._devices)

    def _start(self) -> str:
        nvml = self._nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return f"NVML cannot be used: {exc} (libnvidia-ml.so.1)"
        try:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                uuid, name = nvml.nvmlDeviceGetUUID(handle), nvml.nvmlDeviceGetName(handle)
                device = _Device(handle, index, _text(uuid), _text(name), memory.total / MIB)
                device.migs = self._migs(handle)
                self._devices.append(device)
        except nvml.NVMLError as exc:
            self._devices.clear()
            return f"NVML cannot list the GPUs: {exc}"
        return "" if self._devices else "NVML sees no GPU"

    def _migs(self, handle: Any) -> list[tuple[Any, str]]:
        nvml = self._nvml
        try:
            current, _pending = nvml.nvmlDeviceGetMigMode(handle)
        except nvml.NVMLError:
            return []  # not a MIG-capable GPU
        if current != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        migs = []
        for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)
            except nvml.NVMLError:
                continue  # a slot without an instance
            migs.append((mig, _text(nvml.nvmlDeviceGetUUID(mig))))
        return migs

    def facts(self) -> dict[str, Any]:
        """The `host_gpu_*` fields of the register body (none without a GPU)."""
        if not self._devices:
            return {}
        return {
            "host_gpu_model": self._devices[0].name,
            "host_gpu_count": len(self._devices),
            "host_gpu_memory_mib": round(sum(device.total_mib for device in self._devices)),
        }

    def read(self, tick: Tick) -> GpuReading:
        """The `Source` read: the workload's GPUs are those its live processes'
        NVIDIA_VISIBLE_DEVICES name (all, when none names any)."""
        if not self._devices:
            return NO_GPU
        live = [process for process in tick.members if not process.zombie]
        visible = visible_devices(
            tick.environment(process, "NVIDIA_VISIBLE_DEVICES") for process in live
        )
        return self.figures({process.pid for process in live}, visible)

    def figures(self, pids: Collection[int], visible: set[str] | None) -> GpuReading:
        """The GPUs now: all the sidecar sees (system) and the workload's (process)."""
        if not self._devices:
            return NO_GPU
        system, workload, own = _Figures(), _Figures(), _Figures()
        matched = False
        for device in self._devices:
            if device.lost:
                continue
            try:
                figures, mine, processes = self._device(device, pids, visible)
            except self._nvml.NVMLError as exc:
                self._failed(device, exc)
                continue
            system.add(figures)
            if mine is not None:
                workload.add(mine)
                matched = matched or processes is not None
                if processes is not None:
                    own.add(processes)
        self._say(matched, visible)
        process = own if matched else workload
        return GpuReading(
            system_usage=system.usage,
            system_vram_mib=system.vram_mib,
            system_utilized=system.utilized,
            process_usage=process.usage,
            process_vram_mib=process.vram_mib,
            process_utilized=process.utilized,
            power_w=workload.power_w,
            energy_j=workload.energy_j,
        )

    def _device(
        self, device: _Device, pids: Collection[int], visible: set[str] | None
    ) -> tuple[_Figures, _Figures | None, _Figures | None]:
        """The device's figures; the workload's share (None when not its GPU); what the
        workload's own pids use on it (None when NVML names none of them)."""
        nvml = self._nvml
        handle = device.handle
        utilization = self._optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        figures = _Figures(usage=(utilization or 0) / 100, utilized=int(bool(utilization)))
        figures.power_w = self._optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000)
        figures.energy_j = self._optional(
            lambda: nvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000
        )
        mine = None
        if device.migs:
            for mig, uuid in device.migs:
                used = nvml.nvmlDeviceGetMemoryInfo(mig).used / MIB
                figures.vram_mib += used
                if visible is None or uuid in visible or _names(device, visible):
                    mine = mine or _Figures(figures.usage, 0.0, figures.utilized,
                                            figures.power_w, figures.energy_j)  # fmt: skip
                    mine.vram_mib += used
        else:
            figures.vram_mib = nvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
            if visible is None or _names(device, visible):
                mine = figures
        processes = self._processes(handle, pids) if mine is not None else None
        return figures, mine, processes

    def _processes(self, handle: Any, pids: Collection[int]) -> _Figures | None:
        """What the workload's own pids use, when NVML's pids are the ones the sidecar sees
        (not in a pod: NVML names the node's pids there)."""
        nvml = self._nvml
        running = [p for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle) if p.pid in pids]
        if not running:
            return None
        used = sum((p.usedGpuMemory or 0) for p in running) / MIB
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(handle, self._last_sample_us)
        except nvml.NVMLError:
            samples = []  # no sample since the last read (NOT_FOUND)
        busy = sum(sample.smUtil for sample in samples if sample.pid in pids) / 100
        if samples:
            self._last_sample_us = max(sample.timeStamp for sample in samples)
        return _Figures(usage=busy, vram_mib=used, utilized=int(busy > 0))

    def _optional(self, read: Any) -> Any:
        try:
            return read()
        except self._nvml.NVMLError as exc:
            if exc.value == self._nvml.NVML_ERROR_NOT_SUPPORTED:
                return None  # this GPU (or a MIG slice) does not have the figure
            raise

    def _failed(self, device: _Device, exc: Exception) -> None:
        if getattr(exc, "value", None) == self._nvml.NVML_ERROR_GPU_IS_LOST:
            device.lost = True  # fell off the bus: not asked again; its cells count 0
        self._errors.report("nvml", exc, gpu=device.uuid)

    def _say(self, matched: bool, visible: set[str] | None) -> None:
        path = "process" if matched else "device"
        gpus = tuple(sorted(visible)) if visible is not None else ("all",)
        if self._path != (path, gpus):
            self._path = (path, gpus)
            reason = ("NVML's pids are the workload's" if matched else
                      "NVML names no pid of the workload (a pod: the node's pids)")  # fmt: skip
            log.info("measuring_gpu", path=path, gpus=list(gpus), reason=reason)

    def close(self) -> None:
        """Shut NVML down."""
        if self._nvml is not None and self._devices:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()


def _names(device: _Device, visible: set[str]) -> bool:
    return device.uuid in visible or str(device.index) in visible


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
