"""cgroup v1, v2 and hybrid readers: a pure parser per file shape, a reader bound to a root."""

from __future__ import annotations

import dataclasses
import enum
import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sentinel_sidecar.measure.values import counter

_T = TypeVar("_T")

# v1 reports "no limit" as PAGE_COUNTER_MAX rounded to the page size; anything this big is no limit.
_V1_UNLIMITED = 1 << 62
_V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids")
_LOCATE_CACHE_SIZE = 4096


class CgroupFormatError(ValueError):
    """A cgroup file exists but its content is not what the kernel writes."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(f"cgroup file {path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path


# --- pure parsers, one per file shape ---------------------------------------------------------


def _int(token: str, what: str) -> int:
    try:
        return counter(token, signed=True)  # cpu.cfs_quota_us is -1 without a limit
    except ValueError:
        raise CgroupFormatError(f"{what}: {token[:40]!r} is not a counter") from None


def parse_single(text: str) -> int | None:
    """A one-value file (`memory.current`, `pids.current`); `max` means no limit (None)."""
    token = text.strip()
    if token == "max":
        return None
    if not token or len(token.split()) != 1:
        raise CgroupFormatError(f"expected one value, got {text.strip()!r}")
    return _int(token, "value")


def parse_flat_keyed(text: str) -> dict[str, int]:
    """`key value` lines (`cpu.stat`, `memory.stat`, `memory.events`, `cpuacct.stat`)."""
    values: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CgroupFormatError(f"line {number}: expected 'key value', got {line!r}")
        values[parts[0]] = _int(parts[1], f"line {number}")
    return values


def parse_nested_keyed(text: str) -> dict[str, dict[str, int]]:
    """`id key=value ...` lines, such as v2 `io.stat` (`8:0 rbytes=1 wbytes=2 ...`)."""
    values: dict[str, dict[str, int]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        entry: dict[str, int] = {}
        for pair in parts[1:]:
            key, sep, value = pair.partition("=")
            if not sep:
                raise CgroupFormatError(f"line {number}: expected key=value, got {pair!r}")
            entry[key] = _int(value, f"line {number} {key}")
        values[parts[0]] = entry
    return values


def parse_cpu_max(text: str) -> float | None:
    """v2 `cpu.max` (`quota period` or `max period`) as a limit in cores; None = no limit."""
    parts = text.split()
    if len(parts) != 2:
        raise CgroupFormatError(f"expected 'quota period', got {text.strip()!r}")
    period = _int(parts[1], "period")
    if parts[0] == "max":
        return None
    if period <= 0:
        raise CgroupFormatError(f"period must be > 0, got {period}")
    return _int(parts[0], "quota") / period


def parse_blkio(text: str) -> dict[str, int]:
    """v1 `blkio.*io_service_bytes*`: bytes per operation summed over devices."""
    totals: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts or parts[0] == "Total":
            continue
        if len(parts) != 3:
            raise CgroupFormatError(f"line {number}: expected 'major:minor op bytes', got {line!r}")
        totals[parts[1]] = totals.get(parts[1], 0) + _int(parts[2], f"line {number}")
    return totals


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """`/proc/<pid>/cgroup` as controller list (`"cpu,cpuacct"`; `""` for v2) -> path."""
    membership: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            membership[parts[1]] = parts[2]
    return membership


# --- readings ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class CgroupReading:
    """Cumulative counters and gauges of one cgroup; None where the kernel does not expose one."""

    cpu_usage_s: float | None = None
    cpu_user_s: float | None = None
    cpu_system_s: float | None = None
    cpu_throttled_s: float | None = None
    cpu_limit_cores: float | None = None
    memory_current_bytes: int | None = None
    memory_peak_bytes: int | None = None
    memory_limit_bytes: int | None = None
    memory_inactive_file_bytes: int | None = None
    oom_kills: int | None = None
    io_read_bytes: int | None = None
    io_write_bytes: int | None = None
    pids: int | None = None

    @property
    def memory_working_set_bytes(self) -> int | None:
        """What the kubelet calls working set: current usage minus inactive page cache."""
        if self.memory_current_bytes is None:
            return None
        inactive = self.memory_inactive_file_bytes or 0
        return max(0, self.memory_current_bytes - inactive)

    def merged_with(self, fallback: CgroupReading) -> CgroupReading:
        """This reading with its missing values taken from `fallback`."""
        values = {
            field.name: getattr(self, field.name)
            if getattr(self, field.name) is not None
            else getattr(fallback, field.name)
            for field in dataclasses.fields(self)
        }
        return CgroupReading(**values)


class Layout(enum.Enum):
    """How the cgroup filesystem is mounted under the root."""

    V2 = "v2"
    V1 = "v1"
    HYBRID = "hybrid"
    NONE = "none"


@dataclass(frozen=True)
class CgroupDirs:
    """The directories of one cgroup, one per mounted hierarchy that exposes it."""

    unified: Path | None = None
    cpu: Path | None = None
    cpuacct: Path | None = None
    memory: Path | None = None
    blkio: Path | None = None
    pids: Path | None = None

    def any(self) -> bool:
        """True when at least one hierarchy exposes this cgroup."""
        return any(getattr(self, field.name) is not None for field in dataclasses.fields(self))


def detect_layout(root: Path) -> Layout:
    """v2 (one unified mount), v1 (one mount per controller) or hybrid (v1 + v2 at `unified/`)."""
    if (root / "cgroup.controllers").is_file():
        return Layout.V2
    has_v1 = any((root / name).is_dir() for name in _V1_CONTROLLERS)
    if has_v1 and (root / "unified" / "cgroup.controllers").is_file():
        return Layout.HYBRID
    return Layout.V1 if has_v1 else Layout.NONE


def _under(base: Path, path: str) -> Path | None:
    relative = path.strip("/")
    if ".." in Path(relative).parts:
        return None  # outside our cgroup namespace: not visible from here
    directory = base / relative if relative else base
    return directory if directory.is_dir() else None


class CgroupReader:
    """Reads cgroups under `root` (normally /sys/fs/cgroup) in whatever layout it finds."""

    def __init__(self, root: Path, clock_ticks: int = 100) -> None:
        self.root = root
        self.layout = detect_layout(root)
        self._clock_ticks = clock_ticks
        self._located: dict[tuple[tuple[str, str], ...], CgroupDirs] = {}

    def locate(self, membership: dict[str, str]) -> CgroupDirs:
        """The directories of the cgroup a process is in, from its `/proc/<pid>/cgroup`.

        Remembered per membership: discovery asks for every workload process on every tick,
        and the answer costs a stat() per hierarchy. A process's cgroup exists while it is in it.
        """
        key = tuple(sorted(membership.items()))
        dirs = self._located.get(key)
        if dirs is None:
            if len(self._located) >= _LOCATE_CACHE_SIZE:
                self._located.clear()  # memberships of long-gone containers
            dirs = self._located[key] = self._locate(membership)
        return dirs

    def _locate(self, membership: dict[str, str]) -> CgroupDirs:
        unified = None
        if "" in membership and self.layout in (Layout.V2, Layout.HYBRID):
            base = self.root if self.layout is Layout.V2 else self.root / "unified"
            unified = _under(base, membership[""])
        v1: dict[str, Path | None] = {}
        if self.layout in (Layout.V1, Layout.HYBRID):
            for controller in _V1_CONTROLLERS:
                v1[controller] = self._locate_v1(controller, membership)
        return CgroupDirs(unified=unified, **v1)

    def _locate_v1(self, controller: str, membership: dict[str, str]) -> Path | None:
        for controllers, path in membership.items():
            if controller in controllers.split(","):
                # Mounted at the joint name ("cpu,cpuacct") or at a per-controller symlink.
                for mount in dict.fromkeys((controllers, controller)):
                    found = _under(self.root / mount, path)
                    if found is not None:
                        return found
        return None

    def dirs_for_path(self, path: str) -> CgroupDirs:
        """The directories of the cgroup at `path` (relative to the root, or absolute under it)."""
        candidate = Path(path)
        if candidate.is_relative_to(self.root):
            candidate = candidate.relative_to(self.root)
        relative = str(candidate).strip("/")
        unified = relative
        if self.layout is Layout.HYBRID and candidate.parts[:1] == ("unified",):
            unified = str(Path(*candidate.parts[1:]))
        membership = {"": unified, **dict.fromkeys(_V1_CONTROLLERS, relative)}
        return self.locate(membership)

    def pids(self, dirs: CgroupDirs) -> list[int]:
        """The pids in a cgroup (`cgroup.procs`); empty when it is gone."""
        for directory in (dirs.unified, dirs.cpuacct, dirs.memory, dirs.pids, dirs.cpu):
            if directory is not None:
                text = _read(directory / "cgroup.procs", lambda text: text)
                if text is not None:
                    return [int(line) for line in text.split() if line.isdigit() and len(line) < 12]
        return []

    def read(self, dirs: CgroupDirs) -> CgroupReading:
        """All counters of one cgroup; CgroupFormatError (with the path) for malformed files."""
        v2 = self._read_v2(dirs.unified) if dirs.unified else CgroupReading()
        return self._read_v1(dirs).merged_with(v2)

    def _read_v2(self, d: Path) -> CgroupReading:
        cpu = _read(d / "cpu.stat", parse_flat_keyed) or {}
        memory_stat = _read(d / "memory.stat", parse_flat_keyed) or {}
        events = _read(d / "memory.events", parse_flat_keyed) or {}
        io = _read(d / "io.stat", parse_nested_keyed) or {}
        io_read = sum(device.get("rbytes", 0) for device in io.values()) if io else None
        io_write = sum(device.get("wbytes", 0) for device in io.values()) if io else None
        return CgroupReading(
            cpu_usage_s=_usec(cpu.get("usage_usec")),
            cpu_user_s=_usec(cpu.get("user_usec")),
            cpu_system_s=_usec(cpu.get("system_usec")),
            cpu_throttled_s=_usec(cpu.get("throttled_usec")),
            cpu_limit_cores=_read(d / "cpu.max", parse_cpu_max),
            memory_current_bytes=_read(d / "memory.current", parse_single),
            memory_peak_bytes=_read(d / "memory.peak", parse_single),
            memory_limit_bytes=_read(d / "memory.max", parse_single),
            memory_inactive_file_bytes=memory_stat.get("inactive_file"),
            oom_kills=events.get("oom_kill"),
            io_read_bytes=io_read,
            io_write_bytes=io_write,
            pids=_read(d / "pids.current", parse_single),
        )

    def _read_v1(self, dirs: CgroupDirs) -> CgroupReading:
        usage_ns = stat = throttling = quota = period = None
        if dirs.cpuacct:
            usage_ns = _read(dirs.cpuacct / "cpuacct.usage", parse_single)
            stat = _read(dirs.cpuacct / "cpuacct.stat", parse_flat_keyed)
        if dirs.cpu:
            throttling = _read(dirs.cpu / "cpu.stat", parse_flat_keyed)
            quota = _read(dirs.cpu / "cpu.cfs_quota_us", parse_single)
            period = _read(dirs.cpu / "cpu.cfs_period_us", parse_single)
        memory: dict[str, int | None] = {}
        memory_stat: dict[str, int] = {}
        oom: dict[str, int] = {}
        if dirs.memory:
            for name in ("usage_in_bytes", "max_usage_in_bytes", "limit_in_bytes"):
                memory[name] = _read(dirs.memory / f"memory.{name}", parse_single)
            memory_stat = _read(dirs.memory / "memory.stat", parse_flat_keyed) or {}
            oom = _read(dirs.memory / "memory.oom_control", parse_flat_keyed) or {}
        blkio = None
        if dirs.blkio:
            blkio = _read(dirs.blkio / "blkio.throttle.io_service_bytes_recursive", parse_blkio)
        limit = memory.get("limit_in_bytes")
        ticks = float(self._clock_ticks)
        throttled_ns = throttling.get("throttled_time") if throttling else None
        return CgroupReading(
            cpu_usage_s=usage_ns / 1e9 if usage_ns is not None else None,
            cpu_user_s=stat["user"] / ticks if stat and "user" in stat else None,
            cpu_system_s=stat["system"] / ticks if stat and "system" in stat else None,
            cpu_throttled_s=throttled_ns / 1e9 if throttled_ns is not None else None,
            cpu_limit_cores=quota / period if quota and quota > 0 and period else None,
            memory_current_bytes=memory.get("usage_in_bytes"),
            memory_peak_bytes=memory.get("max_usage_in_bytes"),
            memory_limit_bytes=limit if limit is not None and limit < _V1_UNLIMITED else None,
            memory_inactive_file_bytes=memory_stat.get("total_inactive_file"),
            oom_kills=oom.get("oom_kill"),
            io_read_bytes=blkio.get("Read") if blkio is not None else None,
            io_write_bytes=blkio.get("Write") if blkio is not None else None,
            pids=_read(dirs.pids / "pids.current", parse_single) if dirs.pids else None,
        )


def _usec(value: int | None) -> float | None:
    return value / 1e6 if value is not None else None


def _read(path: Path, parse: Callable[[str], _T]) -> _T | None:
    """Parse one file; a missing file (or controller) is normal and gives None."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
        return None
    except OSError as exc:
        # ENODEV and friends: the cgroup was removed while we read it.
        if exc.errno in (errno.ENODEV, errno.EINVAL):
            return None
        raise
    try:
        return parse(data.decode())
    except UnicodeDecodeError:
        raise CgroupFormatError("not UTF-8 text", path) from None
    except CgroupFormatError as exc:
        raise CgroupFormatError(exc.reason, path) from None
