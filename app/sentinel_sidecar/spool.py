"""The durable spool: append-only `metrics.csv` and the upload cursor `state.json`."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)

METRICS_FILE = "metrics.csv"
STATE_FILE = "state.json"
EXIT_CODE_FILE = "exit_code"


class SpoolError(Exception):
    """The spool directory cannot be used (not writable, not a directory)."""


class Spool:
    """Append-only CSV: the header once, then one `write()` per row."""

    def __init__(self, directory: Path, header: str) -> None:
        if not header.endswith("\n"):
            raise ValueError("header must end with a newline")
        self.directory = directory
        self.path = directory / METRICS_FILE
        self.header = header
        self.header_bytes = header.encode()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._set_aside_if_foreign()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise SpoolError(f"spool_dir {directory}: cannot be used ({exc.strerror})") from exc
        self.size = os.fstat(self._fd).st_size
        if self.size == 0:
            os.write(self._fd, self.header_bytes)
            self.size = len(self.header_bytes)
        else:
            self._drop_torn_tail()

    @property
    def data_start(self) -> int:
        """Offset of the first row, just past the header."""
        return len(self.header_bytes)

    def _set_aside_if_foreign(self) -> None:
        """A spool written with another header is renamed, with its state, never overwritten."""
        if not self.path.exists():
            return
        with self.path.open("rb") as existing:
            first = existing.readline()
        if first and first != self.header_bytes:
            log.warning("spool_header_changed", moved_to=set_aside(self.directory))

    def _drop_torn_tail(self) -> None:
        """A crash mid-write can leave a partial last row; it was never whole, so drop it."""
        tail_start = max(0, self.size - 65536)
        tail = os.pread(self._fd, self.size - tail_start, tail_start)
        end = tail.rfind(b"\n")
        keep = tail_start + end + 1 if end >= 0 else 0
        if keep < self.size:
            os.ftruncate(self._fd, keep)
            log.warning("spool_torn_row_dropped", bytes=self.size - keep)
            self.size = keep

    def append(self, line: str) -> None:
        """Append one row (with its newline) in a single write."""
        data = line.encode()
        written = os.write(self._fd, data)
        if written != len(data):
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
        self.size += written

    def sync(self) -> None:
        """Make every appended row durable."""
        os.fsync(self._fd)

    def read_chunk(self, offset: int, max_bytes: int) -> bytes:
        """Whole rows from `offset`, at most `max_bytes` unless a single row is longer."""
        data = os.pread(self._fd, max(0, min(max_bytes, self.size - offset)), offset)
        end = data.rfind(b"\n")
        if end >= 0:
            return data[: end + 1]
        # No newline within max_bytes: one long row; read on until it ends.
        position = offset + len(data)
        while position < self.size:
            more = os.pread(self._fd, min(65536, self.size - position), position)
            newline = more.find(b"\n")
            if newline >= 0:
                return data + more[: newline + 1]
            data += more
            position += len(more)
        return b""

    def count_rows(self) -> int:
        """Rows in the spool, counted in blocks so a long run is never loaded at once."""
        rows = 0
        position = self.data_start
        while position < self.size:
            block = os.pread(self._fd, min(1 << 20, self.size - position), position)
            rows += block.count(b"\n")
            position += len(block)
        return rows

    def read_all(self) -> bytes:
        """The whole spool, header included; only for runs small enough to send inline."""
        return os.pread(self._fd, self.size, 0)

    def close(self) -> None:
        """Sync and close."""
        self.sync()
        os.close(self._fd)


def set_aside(directory: Path) -> str:
    """Rename `metrics.csv` and `state.json` with a timestamp so a new run starts clean."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = directory / f"metrics.{stamp}.csv"
    if (directory / METRICS_FILE).exists():
        (directory / METRICS_FILE).rename(aside)
    if (directory / STATE_FILE).exists():
        (directory / STATE_FILE).rename(directory / f"state.{stamp}.json")
    return str(aside)


@dataclass(frozen=True)
class State:
    """The upload cursor: what was delivered, where the next chunk starts."""

    run_id: str | None
    upload_uri_prefix: str | None
    seq: int
    offset: int
    uploaded_uris: tuple[str, ...]
    header: str
    finished: bool = False
    started_at: float | None = None

    def after_upload(self, uri: str, offset: int) -> State:
        """The cursor after chunk `seq + 1` up to `offset` was confirmed at `uri`."""
        return dataclasses.replace(
            self, seq=self.seq + 1, offset=offset, uploaded_uris=(*self.uploaded_uris, uri)
        )


class StateStore:
    """`state.json`, replaced atomically so a crash leaves the old or the new state, never torn."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / STATE_FILE
        self._tmp = directory / (STATE_FILE + ".tmp")

    def load(self) -> State | None:
        """The saved state, or None when there is none (or it is unreadable, logged)."""
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
            data["uploaded_uris"] = tuple(data.get("uploaded_uris", ()))
            return State(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            log.warning("state_unreadable", path=str(self.path), error=str(exc))
            return None

    def save(self, state: State) -> None:
        """Write to a temp file, fsync, rename over the old file, fsync the directory."""
        data = json.dumps(dataclasses.asdict(state), indent=1).encode()
        fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self._tmp, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def read_exit_code(directory: Path) -> int | None:
    """The workload's exit code from `<spool_dir>/exit_code`, if its wrapper wrote one."""
    try:
        return int((directory / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
