"""Where chunks go: `DirSink` writes them to a local directory (the embedded default)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol


class SinkError(Exception):
    """A chunk or the run summary could not be delivered; the cursor does not move."""


class Sink(Protocol):
    """Delivers numbered chunks and, at the end, the run summary."""

    def put_chunk(self, seq: int, body: bytes) -> str:
        """Store chunk `seq` (gzipped CSV); return its URI once it is durable."""
        ...

    def put_summary(self, summary: dict[str, Any]) -> str:
        """Store `run.json`; return its URI."""
        ...


def chunk_name(seq: int) -> str:
    """Object/file name of chunk `seq`: `0001.csv.gz`."""
    return f"{seq:04d}.csv.gz"


class DirSink:
    """Chunks as files `NNNN.csv.gz` in a directory, each written to a temp file and renamed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def has_output(self) -> bool:
        """True when the directory already holds chunks or a run summary."""
        return self.directory.is_dir() and any(self._outputs())

    def set_aside(self) -> str:
        """Move an earlier run's chunks and summary into `previous-<timestamp>/`."""
        aside = self.directory / time.strftime("previous-%Y%m%dT%H%M%S", time.gmtime())
        aside.mkdir()
        for path in self._outputs():
            path.rename(aside / path.name)
        return str(aside)

    def _outputs(self) -> list[Path]:
        return [*self.directory.glob("*.csv.gz"), *self.directory.glob("run.json")]

    def put_chunk(self, seq: int, body: bytes) -> str:
        """Write chunk `seq` durably; return its path."""
        return self._write(chunk_name(seq), body)

    def put_summary(self, summary: dict[str, Any]) -> str:
        """Write `run.json`; return its path."""
        return self._write("run.json", (json.dumps(summary, indent=2) + "\n").encode())

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
            raise SinkError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return str(target)
