"""The upload cursor `state.json`: what was delivered and where the next chunk starts, written
whole and trusted only after every field was checked."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from sentinel_sidecar.spool.durable import replace_file

log = structlog.get_logger(__name__)

STATE_FILE = "state.json"

NAME_DIGITS = 6  # chunk names `000001.csv.gz`: in order as text for any realistic run
LEGACY_NAME_DIGITS = 4  # what runs started before 0.1.0's segmented state wrote


def chunk_name(seq: int, digits: int = NAME_DIGITS) -> str:
    """The name of chunk `seq` (from 1) in every mode: `000001.csv.gz`, or `0001.csv.gz` for
    a run started by an older version."""
    return f"{seq:0{digits}d}.csv.gz"


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
    rows_merged: int = 0  # samples folded into a neighbouring row to keep the spool in its cap
    rows_dropped: int = 0  # samples whose figures were given up to keep the spool in its cap
    sample_base: int = 0  # rows the spool held before this run's first (another run's)
    rows_refused: int = 0  # rows of chunks the destination refused for good, kept aside

    def chunk_name(self, seq: int) -> str:
        """File or object name of chunk `seq`: `000001.csv.gz`."""
        return chunk_name(seq, self.name_digits)

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

    def rows(self, samples: int) -> int:
        """Rows this run's data holds when the spool has taken `samples` rows in all."""
        lost = self.rows_merged + self.rows_dropped + self.rows_refused
        return samples - self.sample_base - lost

    def after_refusal(self, offset: int, rows: int) -> State:
        """The cursor past a chunk the destination refused for good (set aside, not
        delivered): the next chunk takes its sequence number."""
        return dataclasses.replace(self, offset=offset, rows_refused=self.rows_refused + rows)

    def after_loss(self, loss: Loss) -> State:
        """The counters after the spool merged or dropped rows to stay in its cap."""
        return dataclasses.replace(
            self,
            rows_merged=self.rows_merged + loss.merged,
            rows_dropped=self.rows_dropped + loss.dropped,
        )


@dataclass(frozen=True)
class Loss:
    """What keeping the spool in its cap cost: samples folded into a neighbouring row (their
    totals kept) and samples given up (a negative `merged` takes back folds that were in the
    rows given up, so `rows = samples - merged - dropped` holds)."""

    merged: int = 0
    dropped: int = 0

    def __add__(self, other: Loss) -> Loss:
        return Loss(self.merged + other.merged, self.dropped + other.dropped)

    def __bool__(self) -> bool:
        return bool(self.merged or self.dropped)


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
        rows_merged=count("rows_merged") if "rows_merged" in data else 0,
        rows_dropped=count("rows_dropped") if "rows_dropped" in data else 0,
        sample_base=count("sample_base") if "sample_base" in data else 0,
        rows_refused=count("rows_refused") if "rows_refused" in data else 0,
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
        """Replace the file atomically (OSError leaves the old one as it was)."""
        replace_file(self.path, json.dumps(dataclasses.asdict(state), indent=1).encode())
