"""The durable spool: append-only `metrics.csv` and the upload cursor `state.json`."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
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


class SpoolWriteError(SpoolError):
    """A row could not be appended (disk full, I/O error); the file holds no part of it."""


BLOCK = 1 << 20  # bytes read at a time when the whole file must be scanned


class Spool:
    """Append-only CSV: the header once, then one `write()` per row. A row is in the file whole
    or not at all; a deleted or replaced file is noticed and recreated from the open one."""

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
        if self.size > 0:
            self._drop_torn_tail()
            return
        try:
            self._write_whole(self.header_bytes)
        except SpoolWriteError as exc:
            # A full disk at start is no crash: the header goes with the first row that fits.
            log.error("spool_header_not_written", error=str(exc))

    @property
    def data_start(self) -> int:
        """Offset of the first row, just past the header."""
        return len(self.header_bytes)

    def _set_aside_if_foreign(self) -> None:
        """A spool written with another header is renamed, with its state, never overwritten."""
        if not self.path.exists():
            return
        with self.path.open("rb") as existing:
            first = existing.read(len(self.header_bytes))
        if first and first != self.header_bytes:
            log.warning("spool_header_changed", moved_to=set_aside(self.directory))

    def _drop_torn_tail(self) -> None:
        """A crash mid-write can leave a partial last row, and a power loss a tail of zeros
        (the size was updated, the data never written). Keep everything up to the last newline
        before the first NUL byte or the end, however far back that is; never the header."""
        end = self._first_nul()
        while end > self.data_start:
            start = max(self.data_start, end - BLOCK)
            newline = os.pread(self._fd, end - start, start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        keep = max(end, self.data_start)
        if keep < self.size:
            dropped = os.pread(self._fd, self.size - keep, keep)
            os.ftruncate(self._fd, keep)
            log.warning("spool_torn_tail_dropped", bytes=len(dropped),
                        zero_bytes=dropped.count(b"\0"))  # fmt: skip
            self.size = keep

    def _first_nul(self) -> int:
        position = 0
        while position < self.size:
            block = os.pread(self._fd, min(BLOCK, self.size - position), position)
            if not block:
                break
            nul = block.find(b"\0")
            if nul >= 0:
                return position + nul
            position += len(block)
        return self.size

    def append(self, line: str) -> None:
        """Append one row (with its newline) in a single write; SpoolWriteError when it could
        not be written whole (the file is rolled back to the row boundary)."""
        self._follow_path()
        data = line.encode()
        self._write_whole(self.header_bytes + data if self.size == 0 else data)

    def _write_whole(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
        except OSError as exc:
            self._roll_back()
            raise SpoolWriteError(f"cannot append to {self.path}: {exc.strerror}") from exc
        if written != len(data):
            self._roll_back()
            raise SpoolWriteError(f"short write to {self.path}: {written} of {len(data)} bytes")
        self.size += written

    def _roll_back(self) -> None:
        try:
            os.ftruncate(self._fd, self.size)
        except OSError as exc:
            log.error("spool_rollback_failed", path=str(self.path), error=exc.strerror)

    def _follow_path(self) -> None:
        """Recreate `metrics.csv` from the open file when it was deleted or replaced: rows
        written to an unlinked file would be gone at exit."""
        mine = os.fstat(self._fd)
        try:
            there = os.stat(self.path)
        except FileNotFoundError:
            reason = "deleted"
        else:
            if (there.st_ino, there.st_dev) == (mine.st_ino, mine.st_dev):
                return
            reason = "replaced"
        try:
            self._recreate(reason)
        except OSError as exc:
            # Go on with the open file: nothing is lost while the agent runs; tried again on
            # the next row.
            log.error("spool_not_recreated", reason=reason, error=exc.strerror)

    def _recreate(self, reason: str) -> None:
        tmp = self.directory / (METRICS_FILE + ".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            position = 0
            while position < self.size:
                block = os.pread(self._fd, min(BLOCK, self.size - position), position)
                _write_all(fd, block)
                position += len(block)
            os.fsync(fd)
            if reason == "replaced":
                stamp = unused_stamp(self.directory, "metrics.foreign.{}.csv")
                os.replace(self.path, self.directory / f"metrics.foreign.{stamp}.csv")
            os.replace(tmp, self.path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(self._fd)
        self._fd = fd
        log.warning("spool_recreated", reason=reason, bytes=self.size, path=str(self.path))

    def cursor_problem(self, offset: int) -> str | None:
        """Why `offset` cannot be an upload cursor of this spool (None when it can): it must
        sit on a row boundary between the header's end and the file's end."""
        if offset < self.data_start:
            return f"offset {offset} is inside the header"
        if offset > self.size:
            return f"offset {offset} is past the spool's end ({self.size} bytes)"
        if offset > self.data_start and os.pread(self._fd, 1, offset - 1) != b"\n":
            return f"offset {offset} is inside a row"
        return None

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
        """Sync and close (closed even when the sync fails)."""
        try:
            self.sync()
        finally:
            os.close(self._fd)


def unused_stamp(directory: Path, *patterns: str) -> str:
    """A UTC time stamp for which no `pattern.format(stamp)` exists in `directory` yet: two
    starts within one second (or after a clock step back) never overwrite each other."""
    base = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for n in itertools.count():
        stamp = f"{base}-{n}" if n else base
        if not any((directory / pattern.format(stamp)).exists() for pattern in patterns):
            return stamp
    raise AssertionError("unreachable")


def set_aside(directory: Path) -> str:
    """Rename `metrics.csv` and `state.json` with a time stamp so a new run starts clean."""
    stamp = unused_stamp(directory, "metrics.{}.csv", "state.{}.json")
    aside = directory / f"metrics.{stamp}.csv"
    if (directory / METRICS_FILE).exists():
        (directory / METRICS_FILE).rename(aside)
    if (directory / STATE_FILE).exists():
        (directory / STATE_FILE).rename(directory / f"state.{stamp}.json")
    return str(aside)


def _write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte is written (a write may take only part of it)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


NAME_DIGITS = 6  # chunk names `000001.csv.gz`: in order as text for any realistic run
LEGACY_NAME_DIGITS = 4  # what runs started before 0.1.0's segmented state wrote


@dataclass(frozen=True)
class State:
    """The upload cursor: what was delivered, where the next chunk starts. Its size does not
    grow with the run: the delivered chunks are named by a rule (`chunk_base`, `seq`,
    `name_digits`), not listed."""

    run_id: str | None
    upload_uri_prefix: str | None
    seq: int
    offset: int
    header: str
    finished: bool = False
    started_at: float | None = None
    chunk_base: str | None = None  # where chunks 1..seq are: a directory or an s3:// prefix
    name_digits: int = NAME_DIGITS  # a resumed run keeps the width it started with

    def chunk_name(self, seq: int) -> str:
        """File or object name of chunk `seq`: `000001.csv.gz`."""
        return f"{seq:0{self.name_digits}d}.csv.gz"

    def uris(self) -> tuple[str, ...]:
        """Where every delivered chunk is, in order."""
        if self.chunk_base is None:
            return ()
        return tuple(f"{self.chunk_base}/{self.chunk_name(n)}" for n in range(1, self.seq + 1))

    def after_upload(self, uri: str, offset: int) -> State:
        """The cursor after chunk `seq + 1` up to `offset` was confirmed at `uri`."""
        name = self.chunk_name(self.seq + 1)
        base, _, stored = uri.rpartition("/")
        if stored != name or (self.chunk_base is not None and base != self.chunk_base):
            raise StateError(f"chunk {self.seq + 1} confirmed at {uri}, not at .../{name}")
        return dataclasses.replace(self, seq=self.seq + 1, offset=offset, chunk_base=base)


class StateError(ValueError):
    """`state.json` is not a state this agent wrote, or does not fit the spool."""


def _check_state(data: Any) -> State:
    """A `State` from parsed JSON, every field checked for type and range."""
    if not isinstance(data, dict):
        raise StateError(f"not a JSON object but {type(data).__name__}")
    fields = {field.name: field for field in dataclasses.fields(State)}
    unknown = set(data) - set(fields) - {"uploaded_uris"}  # the list older versions kept
    if unknown:
        raise StateError(f"unknown fields {sorted(unknown)}")
    missing = {"seq", "offset", "header"} - set(data)
    if missing:
        raise StateError(f"missing fields {sorted(missing)}")

    def text_or_none(name: str) -> str | None:
        value = data.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise StateError(f"{name} is {value!r}, not a non-empty string or null")
        return value

    def count(name: str) -> int:
        value = data[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StateError(f"{name} is {value!r}, not a whole number >= 0")
        return value

    seq = count("seq")
    chunk_base, digits = _chunk_naming(data, seq)
    header = data["header"]
    if not isinstance(header, str) or not header.endswith("\n"):
        raise StateError("header is not a CSV header line")
    finished = data.get("finished", False)
    if not isinstance(finished, bool):
        raise StateError(f"finished is {finished!r}, not true or false")
    started_at = data.get("started_at")
    if started_at is not None and (
        not isinstance(started_at, int | float)
        or isinstance(started_at, bool)
        or not math.isfinite(started_at)
        or started_at < 0
    ):
        raise StateError(f"started_at is {started_at!r}, not a UNIX time")
    return State(
        run_id=text_or_none("run_id"),
        upload_uri_prefix=text_or_none("upload_uri_prefix"),
        seq=seq,
        offset=count("offset"),
        header=header,
        finished=finished,
        started_at=float(started_at) if started_at is not None else None,
        chunk_base=chunk_base,
        name_digits=digits,
    )


def _chunk_naming(data: dict[str, Any], seq: int) -> tuple[str | None, int]:
    """`chunk_base` and `name_digits` of a saved state; from the URI list of an older one,
    which must then be exactly the chunks the rule names."""
    if "uploaded_uris" not in data:
        base, digits = data.get("chunk_base"), data.get("name_digits", NAME_DIGITS)
        if base is not None and (not isinstance(base, str) or not base):
            raise StateError(f"chunk_base is {base!r}, not a non-empty string or null")
        if not isinstance(digits, int) or isinstance(digits, bool) or not 1 <= digits <= 12:
            raise StateError(f"name_digits is {digits!r}, not a whole number 1-12")
        if seq > 0 and base is None:
            raise StateError(f"seq {seq} without a chunk_base")
        return base, digits
    uris = data["uploaded_uris"]
    if not isinstance(uris, list) or not all(isinstance(uri, str) and uri for uri in uris):
        raise StateError("uploaded_uris is not a list of strings")
    if len(uris) != seq:
        raise StateError(f"{len(uris)} uploaded_uris for seq {seq}")
    if not uris:
        return None, NAME_DIGITS
    base = uris[0].rpartition("/")[0]
    legacy = State(None, None, seq, 0, "\n", chunk_base=base, name_digits=LEGACY_NAME_DIGITS)
    if list(legacy.uris()) != uris:
        raise StateError("uploaded_uris are not the chunks 1..seq under one prefix")
    return base, LEGACY_NAME_DIGITS


class StateStore:
    """`state.json`, replaced atomically so a crash leaves the old or the new state, never torn;
    read back only after every field was checked."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE
        self._tmp = directory / (STATE_FILE + ".tmp")

    def load(self) -> State | None:
        """The saved state; None when there is none, or when it cannot be trusted (then it is
        kept aside as `state.invalid.<n>.json` with one error line)."""
        try:
            raw = self.path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            self.keep_aside(f"unreadable: {exc.strerror}")
            return None
        try:
            return _check_state(json.loads(raw))
        except (ValueError, RecursionError) as exc:  # JSON and StateError are ValueErrors
            self.keep_aside(str(exc))
            return None

    def keep_aside(self, problem: str) -> None:
        """Move `state.json` out of the way: the next run starts from the spool, not from it."""
        for n in itertools.count(1):
            aside = self.directory / f"state.invalid.{n}.json"
            if not aside.exists():
                break
        try:
            self.path.rename(aside)
        except OSError as exc:
            log.error("state_invalid", problem=problem, path=str(self.path), kept=None,
                      error=exc.strerror)  # fmt: skip
            return
        log.error("state_invalid", problem=problem, path=str(self.path), kept=str(aside),
                  recovery="a new run from the start of the spool")  # fmt: skip

    def save(self, state: State) -> None:
        """Write every byte to a temp file, fsync, rename over the old file, fsync the
        directory. On failure the old file stays as it was (and no temp file is left)."""
        data = json.dumps(dataclasses.asdict(state), indent=1).encode()
        try:
            fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
            raise
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
