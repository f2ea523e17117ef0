"""The durable spool: rows in segment files that are deleted once delivered, kept within a cap
by merging undelivered rows into coarser ones."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import structlog

from sentinel_sidecar.setting import PATH, number, setting, settings_group
from sentinel_sidecar.spool.merge import halve
from sentinel_sidecar.spool.segment import (
    Segment,
    SpoolError,
    SpoolWriteError,
    parse_segment_name,
    segment_name,
)
from sentinel_sidecar.spool.state import STATE_FILE, Loss

log = structlog.get_logger(__name__)

LEGACY_FILE = "metrics.csv"  # the one file of versions before segments
ROOM_AGAIN = 0.5  # a spool_full episode ends below this share of the cap
SEGMENT_BYTES = 2 * 1024 * 1024
MIN_SEGMENTS = 8  # spool_max_bytes holds at least this many segments
# The spool keeps room for this many segments even when local-mode output fills the cap.
LOCAL_FLOOR_SEGMENTS = 3

__all__ = [
    "Spool",
    "SpoolError",
    "SpoolWriteError",
    "set_aside",
    "spool_files",
]


@settings_group
class SpoolSettings:
    """Where the rows wait for delivery, and how much of the volume they may take."""

    TITLE: ClassVar[str] = "Spool"

    spool_dir: Path = setting(
        Path("/var/lib/sentinel-sidecar"),
        PATH,
        "spool: `segment-*.csv`, `state.json`, `exit_code` (an emptyDir in a pod)",
    )
    spool_max_bytes: int = setting(
        256 * 1024 * 1024,
        number(int, MIN_SEGMENTS * 4096, f"a whole number of bytes >= {MIN_SEGMENTS * 4096}"),
        "cap of the spool's segment files (with local-mode output inside spool_dir); "
        f"undelivered rows past it are merged into coarser ones; >= {MIN_SEGMENTS} segments",
    )
    spool_segment_bytes: int = setting(
        SEGMENT_BYTES,
        number(int, 4096, "a whole number of bytes >= 4096"),
        "size at which a spool segment is closed and a new one begun; a delivered segment "
        "is deleted",
    )


class Spool:
    """Rows in segments of about `segment_bytes`, one logical offset space across them (a
    cursor is one number and names its segment). Segments whose rows were all acknowledged
    are deleted; when the segments would pass `max_bytes` (less what `reserved` says others
    keep on the volume) undelivered rows are merged pairwise, the finest segment first, and a
    segment is given up only when merging cannot make room. A sampler thread appends, the
    upload thread reads and acknowledges."""

    def __init__(
        self,
        directory: Path,
        header: str,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        max_bytes: int | None = None,
        reserved: Callable[[], int] = lambda: 0,
    ) -> None:
        if not header.endswith("\n"):
            raise ValueError("header must end with a newline")
        self.directory = directory
        self.header_bytes = header.encode()
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes  # None: no cap
        self._reserved = reserved
        self._lock = threading.Lock()
        self._cursor = 0  # rows before this logical offset are delivered
        self.full = False  # in a spool_full episode
        self._episode = Loss()
        self._merge_failed = False
        self._unreported = Loss()  # segments lost while being read, told with the next append
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._segments = self._open_segments()
        except OSError as exc:
            raise SpoolError(f"spool_dir {directory}: cannot be used ({exc.strerror})") from exc

    def _open_segments(self) -> list[Segment]:
        """The segments on disk (an older version's `metrics.csv` becomes the first), the
        last one's torn tail cut; a new first segment when there are none."""
        legacy = self.directory / LEGACY_FILE
        if legacy.exists() and not _segment_files(self.directory):
            legacy.rename(self.directory / segment_name(len(self.header_bytes), 0))
            log.info("spool_upgraded", path=str(legacy), to="segments")
        names = _segment_files(self.directory)
        segments = [
            Segment(self.directory, self.header_bytes, first, sample, sealed=n < len(names) - 1)
            for n, (first, sample) in enumerate(names)
        ]
        if any(segment.header_problem() for segment in segments) or legacy.exists():
            for segment in segments:
                segment.close()
            log.warning("spool_header_changed", moved_to=set_aside(self.directory))
            segments = []
        if segments:
            segments[-1].drop_torn_tail()
            return segments
        first = Segment(self.directory, self.header_bytes, len(self.header_bytes), 0)
        try:
            first.write_header()
        except SpoolWriteError as exc:
            # A full disk at start is no crash: the header goes with the first row that fits.
            log.error("spool_header_not_written", error=str(exc))
        return [first]

    @property
    def data_start(self) -> int:
        """Logical offset of the first row in the spool (where a new run's cursor starts)."""
        return self._segments[0].first

    @property
    def first_sample(self) -> int:
        """Rows appended before the spool's first row left (delivered, their segments gone)."""
        return self._segments[0].sample

    @property
    def end(self) -> int:
        """Logical offset just past the last row."""
        return self._segments[-1].end

    @property
    def disk_bytes(self) -> int:
        """Bytes of every segment file, headers included."""
        with self._lock:
            return self._used()

    def _used(self) -> int:
        return sum(segment.size for segment in self._segments)

    @property
    def samples(self) -> int:
        """Rows ever appended in this run, merged and given-up ones included (segment names
        carry the count, so deleting delivered segments loses none)."""
        last = self._segments[-1]
        return last.sample + last.rows

    def pending(self, offset: int) -> int:
        """Bytes of rows at or past logical `offset`: not yet delivered."""
        with self._lock:
            return sum(max(0, s.end - max(s.first, offset)) for s in self._segments)

    def cursor_problem(self, offset: int) -> str | None:
        """Why `offset` cannot be an upload cursor of this spool (None when it can): it must
        start a row (or end a segment), or lie before every segment that is left."""
        segments = self._segments
        if offset > segments[-1].end:
            return f"offset {offset} is past the spool's end ({segments[-1].end})"
        if offset < segments[0].first:
            if segments[0].sample == 0:
                return f"offset {offset} is before the spool's first row ({segments[0].first})"
            return None  # rows delivered and their segments deleted
        for segment in segments:
            if segment.first <= offset <= segment.end:
                return (
                    None if segment.is_row_boundary(offset) else f"offset {offset} is inside a row"
                )
        return f"offset {offset} is in no segment"

    def append(self, line: str) -> Loss:
        """Append one row (with its newline) in a single write; SpoolWriteError when it could
        not be written whole. What making room for it cost (usually nothing)."""
        data = line.encode()
        with self._lock:
            active = self._segments[-1]
            if active.rows and active.size + len(data) > self.segment_bytes:
                active = self._roll(active)
            loss = self._make_room(len(data) + (len(self.header_bytes) if active.size == 0 else 0))
            active.append(data)
            loss, self._unreported = loss + self._unreported, Loss()
        return loss

    def _roll(self, active: Segment) -> Segment:
        try:
            new = Segment(
                self.directory, self.header_bytes, active.end, active.sample + active.rows
            )
        except OSError as exc:
            raise SpoolWriteError(
                f"cannot start a segment in {self.directory}: {exc.strerror}"
            ) from exc
        try:
            active.close()  # sealed: no more rows; closed even when its last sync fails
        except OSError as exc:
            log.error("spool_not_synced", path=str(active.path), error=exc.strerror)
        self._segments.append(new)
        return new

    def _make_room(self, need: int) -> Loss:
        """Merge (or give up) undelivered rows until `need` more bytes fit under the cap."""
        if self.max_bytes is None:
            return Loss()
        limit = max(self.max_bytes - self._reserved(), LOCAL_FLOOR_SEGMENTS * self.segment_bytes)
        used = self._used()
        loss = Loss()
        while used + need > limit:
            candidates = self._candidates()
            if not candidates:
                break
            segment = min(candidates, key=self._level)  # min() keeps the oldest of equals
            loss += self._merge(segment, candidates)
            used = self._used()
        self._track_episode(loss, used, limit)
        return loss

    def _candidates(self) -> list[Segment]:
        """Sealed segments after the one the upload cursor reads from, with rows left."""
        segments = self._segments
        reading = next((i for i, s in enumerate(segments) if s.end > self._cursor), len(segments))
        return [s for s in segments[reading + 1 : -1] if s.rows]

    def _level(self, segment: Segment) -> float:
        """Samples per row: 1 for rows as taken, 2 after one merge, ..."""
        return self._samples_in(segment) / segment.rows

    def _samples_in(self, segment: Segment) -> int:
        following = self._segments[self._segments.index(segment) + 1]
        return following.sample - segment.sample

    def _merge(self, segment: Segment, candidates: list[Segment]) -> Loss:
        """Halve the rows of `segment` together with a neighbour's that may be merged too (the
        later of the two is then deleted: its samples fall in the earlier one's name range). A
        segment with one row and nobody to merge with is given up."""
        at = self._segments.index(segment)
        before, after = self._segments[at - 1] if at else None, self._segments[at + 1]
        # One merge reads at most one segment's worth: it runs inside an append.
        if after in candidates and segment.size + after.size <= self.segment_bytes:
            parts = [segment, after]
        elif (
            before is not None
            and before in candidates
            and (segment.rows < 2 or before.size + segment.size <= self.segment_bytes)
        ):
            parts = [before, segment]
        else:
            parts = [segment]
        rows = sum(part.rows for part in parts)
        if rows < 2:
            return self._give_up(segment)
        segment = parts[0]
        data = b"".join(part.read(part.first, part.end - part.first) for part in parts)
        merged, count = halve(self.header_bytes, data)
        try:
            segment.rewrite(merged, count)
        except OSError as exc:  # no room even for the smaller copy
            if not self._merge_failed:
                self._merge_failed = True  # said once per spool_full episode
                log.error("spool_merge_failed", path=str(segment.path), error=exc.strerror,
                          consequence="undelivered segments are given up, counted")  # fmt: skip
            return self._give_up(segment)
        for part in parts[1:]:
            self._delete(part)
        return Loss(merged=rows - count)

    def _give_up(self, segment: Segment) -> Loss:
        """Empty `segment`, kept as a header-only marker: its name still counts the samples
        up to the next segment. Two markers in a row become one (the later one's samples
        fall in the earlier one's range), so markers never pile up."""
        samples, rows = self._samples_in(segment), segment.rows
        segment.truncate_rows()
        at = self._segments.index(segment)
        later = self._segments[at + 1]
        if at and not self._segments[at - 1].rows:
            self._delete(segment)
        if later is not self._segments[-1] and not later.rows:
            self._delete(later)
        return Loss(merged=-(samples - rows), dropped=samples)

    def _delete(self, segment: Segment) -> None:
        self._segments.remove(segment)
        try:
            segment.delete()
        except OSError as exc:
            log.error("spool_segment_not_deleted", path=str(segment.path), error=exc.strerror)

    def _track_episode(self, loss: Loss, used: int, limit: int) -> None:
        if loss and not self.full:
            self.full = True
            log.warning(
                "spool_full",
                cap_bytes=limit,
                spool_bytes=used,
                directory=str(self.directory),
                policy="undelivered rows are merged pairwise (totals and peaks kept); a "
                "segment is given up only when merging cannot make room",
            )
        self._episode += loss
        if self.full and used < ROOM_AGAIN * limit:
            self.full = False
            log.info("spool_room_again", spool_bytes=used, rows_merged=self._episode.merged,
                     rows_dropped=self._episode.dropped)  # fmt: skip
            self._episode = Loss()
            self._merge_failed = False

    def read_chunk(self, offset: int, max_bytes: int) -> tuple[bytes, int]:
        """Whole rows from the first segment with rows at or past `offset` (a chunk never spans
        segments), at most `max_bytes` unless one row is longer; the rows and where they end."""
        while True:
            with self._lock:
                segment = next((s for s in self._segments if s.end > max(offset, s.first)), None)
            if segment is None:
                return b"", offset
            start = max(offset, segment.first)
            try:
                rows = segment.read_rows(start, max_bytes)
            except FileNotFoundError:
                self._lost(segment)
                continue
            return rows, start + len(rows) if rows else offset

    def _lost(self, segment: Segment) -> None:
        """A sealed segment deleted behind the agent's back: said, counted as given up (with
        the next append's loss), and skipped."""
        with self._lock:
            if segment not in self._segments:
                return
            samples = self._samples_in(segment)
            self._segments.remove(segment)
            self._unreported += Loss(dropped=samples)
        log.error("spool_segment_lost", path=str(segment.path), samples=samples,
                  reason="deleted by someone else before it was delivered")  # fmt: skip

    def acknowledge(self, offset: int) -> None:
        """Rows before `offset` are delivered: delete the sealed segments that hold only those."""
        with self._lock:
            self._cursor = offset
            while len(self._segments) > 1 and self._segments[0].end <= offset:
                self._delete(self._segments[0])

    def sync(self) -> None:
        """Make every appended row durable (sealed segments were synced when they were)."""
        self._segments[-1].sync()

    def read_all(self) -> bytes:
        """The header and every row left; only for runs small enough to send inline."""
        with self._lock:
            return self.header_bytes + b"".join(
                s.read(s.first, s.end - s.first) for s in self._segments
            )

    def close(self) -> None:
        """Sync and close every segment (all closed even when a sync fails)."""
        errors = []
        for segment in self._segments:
            try:
                segment.close()
            except OSError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]


def spool_files(directory: Path) -> list[Path]:
    """The CSV files of a spool directory in the order of the run: its segments, or the one
    `metrics.csv` of an older version."""
    found = [directory / segment_name(*name) for name in _segment_files(directory)]
    legacy = directory / LEGACY_FILE
    return found or ([legacy] if legacy.is_file() else [])


def _segment_files(directory: Path) -> list[tuple[int, int]]:
    """(first, sample) of the segment files in `directory`, in the order of the run."""
    names = (parse_segment_name(path.name) for path in directory.iterdir())
    return sorted(name for name in names if name is not None)


def unused_stamp(directory: Path, *patterns: str) -> str:
    """A UTC time stamp for which no `pattern.format(stamp)` exists in `directory` yet: two
    starts within one second (or after a clock step back) never overwrite each other."""
    base = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    for n in itertools.count():
        stamp = f"{base}-{n}" if n else base
        if not any((directory / pattern.format(stamp)).exists() for pattern in patterns):
            return stamp
    raise AssertionError("unreachable")


def set_aside(directory: Path, delivered_up_to: int = 0, header: bytes = b"") -> str | None:
    """Start a new run clean: the segments (written with `header`) holding only rows before
    logical offset `delivered_up_to` are deleted (they are the destination's now), the other
    spool files and `state.json` move to `previous-<timestamp>/`. Where they went; None if
    nowhere."""
    for first, sample in _segment_files(directory):
        segment = Segment(directory, header, first, sample, sealed=True)
        if segment.end <= delivered_up_to:
            segment.delete()
    kept = [directory / segment_name(*name) for name in _segment_files(directory)]
    kept += [path for path in (directory / LEGACY_FILE, directory / STATE_FILE) if path.exists()]
    if not kept:
        return None
    aside = directory / f"previous-{unused_stamp(directory, 'previous-{}')}"
    aside.mkdir()
    for path in kept:
        path.rename(aside / path.name)
    return str(aside)
