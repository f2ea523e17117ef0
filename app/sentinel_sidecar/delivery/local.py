"""Local mode (the embedded default): chunks and `run.json` as files in a directory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import structlog

from sentinel_sidecar.delivery.destination import (
    DestinationKind,
    DestinationStatus,
    RunSummary,
    Wiring,
)
from sentinel_sidecar.delivery.retry import DeliveryError, ErrorKind
from sentinel_sidecar.setting import PATH, setting, settings_group
from sentinel_sidecar.spool.durable import replace_file
from sentinel_sidecar.spool.store import LOCAL_FLOOR_SEGMENTS, unused_stamp

if TYPE_CHECKING:
    from sentinel_sidecar.spool.state import State
    from sentinel_sidecar.spool.store import Spool

log = structlog.get_logger(__name__)


@settings_group
class LocalSettings:
    """Local mode, when neither a token nor an S3 URI is set."""

    TITLE: ClassVar[str] = "Local mode"

    output_dir: Path | None = setting(
        None, PATH, "local mode: where chunks and `run.json` go (default `<spool_dir>/output`)"
    )


class LocalDestination:
    """Chunks as files `NNNNNN.csv.gz`, each written to a temp file, fsynced and renamed.

    With a `budget` (the output is on the spool's volume) the bytes under `directory` count
    against the spool's cap: a chunk that would pass the budget is refused, so its rows stay
    in the spool, where the cap's policy applies to them."""

    inline_max_bytes = 0

    def __init__(self, directory: Path, *, new_run: bool, budget: int | None = None) -> None:
        self.directory = directory
        self._new_run = new_run
        self._budget = budget
        self._kept: int | None = None  # bytes under `directory`, measured once
        self._opened = False  # a chunk before `open` could land among an earlier run's files

    @property
    def kept_bytes(self) -> int:
        """Bytes of output on the spool's volume (0 when it is elsewhere)."""
        if self._budget is None:
            return 0
        if self._kept is None:
            try:
                files = [path for path in self.directory.rglob("*") if path.is_file()]
                self._kept = sum(path.stat().st_size for path in files)
            except OSError:  # not there yet, or not a directory: nothing kept
                return 0
        return self._kept

    def open(self, state: State, deadline: float) -> State:
        """A new run first moves an earlier run's files into `previous-<timestamp>/`."""
        if self._new_run and self.directory.is_dir() and self._outputs():
            aside = self.directory / f"previous-{unused_stamp(self.directory, 'previous-{}')}"
            try:
                aside.mkdir()
                for path in self._outputs():
                    path.rename(aside / path.name)
            except OSError as exc:
                raise DeliveryError(f"cannot set {self.directory} aside: {exc}") from exc
            log.warning("output_dir_set_aside", moved_to=str(aside))
        self._new_run = False
        self._opened = True
        return state

    def _outputs(self) -> list[Path]:
        return [*self.directory.glob("*.csv.gz"), *self.directory.glob("run.json")]

    def put_chunk(self, name: str, body: bytes, deadline: float) -> str:
        """Write the chunk `name` durably; its path."""
        if not self._opened:
            raise DeliveryError("the local destination is not open yet")
        if self._budget is not None and self.kept_bytes + len(body) > self._budget:
            raise DeliveryError(
                f"{self.directory} holds {self.kept_bytes} bytes: a chunk more would pass the "
                f"{self._budget} bytes spool_max_bytes leaves it; rows stay in the spool",
                ErrorKind.REJECTED,
            )
        return self._write(name, body)

    def close(self, summary: RunSummary, spool: Spool, deadline: float) -> str | None:
        """Write `run.json`; its path."""
        return self._write("run.json", summary.to_json())

    def status(self) -> DestinationStatus:
        """Ready once open (at once: a directory needs no registration)."""
        return DestinationStatus(ready=self._opened)

    def _write(self, name: str, body: bytes) -> str:
        target = self.directory / name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            replaced = target.stat().st_size if target.exists() else 0
            replace_file(target, body)
        except OSError as exc:
            raise DeliveryError(f"cannot write {target}: {exc.strerror or exc}") from exc
        if self._kept is not None:
            self._kept += len(body) - replaced
        return str(target)


class _Settings(Protocol):
    """What local mode is built from (of `config.Settings`)."""

    @property
    def output_dir(self) -> Path | None: ...
    @property
    def spool_dir(self) -> Path: ...
    @property
    def spool_max_bytes(self) -> int: ...
    @property
    def spool_segment_bytes(self) -> int: ...


def output_dir(settings: _Settings) -> Path:
    """Where local mode writes chunks: `output_dir`, else `<spool_dir>/output`."""
    return settings.output_dir or settings.spool_dir / "output"


def _build(settings: _Settings, wiring: Wiring) -> LocalDestination:
    output = output_dir(settings)
    on_spool_volume = output.resolve().is_relative_to(settings.spool_dir.resolve())
    # Output inside the spool directory shares its emptyDir: it counts against the cap, and
    # the spool keeps room for a few segments of its own.
    budget = settings.spool_max_bytes - LOCAL_FLOOR_SEGMENTS * settings.spool_segment_bytes
    return LocalDestination(
        output, new_run=wiring.new_run, budget=budget if on_spool_volume else None
    )


KIND = DestinationKind("local", LocalSettings, lambda settings: True, _build)  # the fallback
