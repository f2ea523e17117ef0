"""One spool segment: a CSV file of the header, then whole rows, appended one write per row."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import structlog

from sentinel_sidecar.spool.durable import replace_file, write_all

log = structlog.get_logger(__name__)

BLOCK = 1 << 20  # bytes read at a time when a whole file must be scanned
_NAME = re.compile(r"^segment-(\d{15})-(\d{12})\.csv$")


class SpoolError(Exception):
    """The spool directory cannot be used (not writable, not a directory)."""


class SpoolWriteError(SpoolError):
    """A row could not be appended (disk full, I/O error); the file holds no part of it."""


def segment_name(first: int, sample: int) -> str:
    """`segment-<first>-<sample>.csv`: the logical offset of its first row and the number of
    samples taken before it, so that names sort in the order of the run."""
    return f"segment-{first:015d}-{sample:012d}.csv"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(first, sample) of a segment's file name; None for any other file."""
    match = _NAME.match(name)
    return (int(match[1]), int(match[2])) if match else None


class Segment:
    """Rows at logical offsets `first` .. `end`: the file position `len(header) + n` holds the
    logical offset `first + n`. A row is in the file whole or not at all; a deleted or replaced
    file is recreated from the open one while it is appended to."""

    def __init__(
        self, directory: Path, header: bytes, first: int, sample: int, *, sealed: bool = False
    ) -> None:
        self.header = header
        self.first = first
        self.sample = sample
        self.path = directory / segment_name(first, sample)
        # Only the segment appended to keeps a descriptor: a spool at its cap has a hundred
        # segments, and a pod's file limit may be 1024.
        self._fd: int | None = None
        if sealed:
            self.size = os.stat(self.path).st_size
        else:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            self.size = os.fstat(self._fd).st_size
        self._rows: int | None = 0 if self.size == 0 else None

    @property
    def end(self) -> int:
        """Logical offset just past the last row."""
        return self.first + max(0, self.size - len(self.header))

    @property
    def rows(self) -> int:
        """Rows in the file (counted once, in blocks, then kept up to date)."""
        if self._rows is None:
            self._rows = 0
            for position in range(self.first, self.end, BLOCK):
                self._rows += self.read(position, BLOCK).count(b"\n")
        return self._rows

    def header_problem(self) -> str | None:
        """Why this file is not a segment of this header's spool (None when it is)."""
        start = self._pread(len(self.header), 0)
        return "written with another header" if start != self.header[: len(start)] else None

    def _pread(self, length: int, position: int) -> bytes:
        if self._fd is not None:
            return os.pread(self._fd, length, position)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            return os.pread(fd, length, position)
        finally:
            os.close(fd)

    def _own_fd(self) -> int:
        assert self._fd is not None, "a sealed segment is not written to"
        return self._fd

    def append(self, data: bytes) -> None:
        """Append whole rows in one write (the header first into an empty file); SpoolWriteError
        when it could not be written whole (the file is rolled back to the row boundary)."""
        self._follow_path()
        self._write_whole(self.header + data if self.size == 0 else data)
        if self._rows is not None:
            self._rows += data.count(b"\n")

    def write_header(self) -> None:
        """Start an empty file with the header (else the first row brings it)."""
        if self.size == 0:
            self._write_whole(self.header)

    def _write_whole(self, data: bytes) -> None:
        try:
            written = os.write(self._own_fd(), data)
        except OSError as exc:
            self._roll_back()
            raise SpoolWriteError(f"cannot append to {self.path}: {exc.strerror}") from exc
        if written != len(data):
            self._roll_back()
            raise SpoolWriteError(f"short write to {self.path}: {written} of {len(data)} bytes")
        self.size += written

    def _roll_back(self) -> None:
        try:
            os.ftruncate(self._own_fd(), self.size)
        except OSError as exc:
            log.error("spool_rollback_failed", path=str(self.path), error=exc.strerror)

    def drop_torn_tail(self) -> None:
        """A crash mid-write can leave a partial last row, and a power loss a tail of zeros
        (the size was updated, the data never written). Keep everything up to the last newline
        before the first NUL byte or the end, however far back that is; never the header."""
        start_of_rows = len(self.header)
        if self.size < start_of_rows:  # torn in the header: it comes again with the first row
            os.ftruncate(self._own_fd(), 0)
            self.size, self._rows = 0, 0
            return
        end = self._first_nul()
        while end > start_of_rows:
            start = max(start_of_rows, end - BLOCK)
            newline = self._pread(end - start, start).rfind(b"\n")
            if newline >= 0:
                end = start + newline + 1
                break
            end = start
        keep = max(end, start_of_rows)
        if keep < self.size:
            dropped = self._pread(self.size - keep, keep)
            os.ftruncate(self._own_fd(), keep)
            log.warning("spool_torn_tail_dropped", bytes=len(dropped),
                        zero_bytes=dropped.count(b"\0"), path=str(self.path))  # fmt: skip
            self.size = keep
            self._rows = None

    def _first_nul(self) -> int:
        position = 0
        while position < self.size:
            block = self._pread(min(BLOCK, self.size - position), position)
            if not block:
                break
            nul = block.find(b"\0")
            if nul >= 0:
                return position + nul
            position += len(block)
        return self.size

    def _follow_path(self) -> None:
        """Recreate the file from the open one when it was deleted or replaced: rows written
        to an unlinked file would be gone at exit."""
        mine = os.fstat(self._own_fd())
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
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        try:
            position = 0
            while position < self.size:
                block = self._pread(min(BLOCK, self.size - position), position)
                write_all(fd, block)
                position += len(block)
            os.fsync(fd)
            if reason == "replaced":
                foreign = self.path.with_name(f"foreign.{self.path.name}")
                os.replace(self.path, foreign)
            os.replace(tmp, self.path)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(self._own_fd())
        self._fd = fd
        log.warning("spool_recreated", reason=reason, bytes=self.size, path=str(self.path))

    def is_row_boundary(self, offset: int) -> bool:
        """True when logical `offset` (within this segment) starts a row or ends the file."""
        if offset == self.first:
            return True
        return self._pread(1, len(self.header) + offset - self.first - 1) == b"\n"

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes from logical `offset` (clipped to the file's end)."""
        length = max(0, min(length, self.end - offset))
        return self._pread(length, len(self.header) + offset - self.first)

    def read_rows(self, offset: int, max_bytes: int) -> bytes:
        """Whole rows from logical `offset`, at most `max_bytes` unless one row is longer."""
        data = self.read(offset, max_bytes)
        end = data.rfind(b"\n")
        if end >= 0:
            return data[: end + 1]
        # No newline within max_bytes: one long row; read on until it ends.
        position = offset + len(data)
        while position < self.end:
            more = self.read(position, 65536)
            newline = more.find(b"\n")
            if newline >= 0:
                return data + more[: newline + 1]
            data += more
            position += len(more)
        return b""

    def rewrite(self, rows: bytes, row_count: int) -> None:
        """Replace the rows by `rows` (fewer, coarser ones), atomically: a crash leaves the old
        file or the new one. OSError leaves the old one in place."""
        assert self._fd is None, "only a sealed segment is rewritten"
        replace_file(self.path, self.header + rows)
        self.size = len(self.header) + len(rows)
        self._rows = row_count

    def truncate_rows(self) -> None:
        """Keep only the header (needs no free space, unlike a rewrite)."""
        os.truncate(self.path, len(self.header))
        self.size, self._rows = len(self.header), 0

    def sync(self) -> None:
        """Make every appended row durable."""
        if self._fd is not None:
            os.fsync(self._fd)

    def delete(self) -> None:
        """Close and remove the file (its rows are delivered, merged away or given up)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        """Sync and close (closed even when the sync fails)."""
        if self._fd is None:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = None
