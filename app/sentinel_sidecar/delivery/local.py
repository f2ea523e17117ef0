"""Local mode (the embedded default): chunks and `run.json` as files in a directory."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from sentinel_sidecar.delivery.destination import (
    DeliveryError,
    DestinationStatus,
    RunSummary,
)
from sentinel_sidecar.spool import unused_stamp

if TYPE_CHECKING:
    from sentinel_sidecar.spool import Spool, State

log = structlog.get_logger(__name__)


class LocalDestination:
    """Chunks as files `NNNNNN.csv.gz`, each written to a temp file, fsynced and renamed."""

    inline_max_bytes = 0

    def __init__(self, directory: Path, *, new_run: bool) -> None:
        self.directory = directory
        self._new_run = new_run

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
        return state

    def _outputs(self) -> list[Path]:
        return [*self.directory.glob("*.csv.gz"), *self.directory.glob("run.json")]

    def put_chunk(self, name: str, body: bytes, deadline: float) -> str:
        """Write the chunk `name` durably; its path."""
        return self._write(name, body)

    def close(self, summary: RunSummary, spool: Spool, deadline: float) -> str | None:
        """Write `run.json`; its path."""
        return self._write("run.json", summary.to_json())

    def status(self) -> DestinationStatus:
        """Always ready: a directory needs no registration."""
        return DestinationStatus(ready=True)

    def _write(self, name: str, body: bytes) -> str:
        target = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()  # no empty .tmp files left behind on a full disk
            raise DeliveryError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return str(target)
