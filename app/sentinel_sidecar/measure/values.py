"""Kernel text as numbers: one checked parser for every counter, and a record of what could
not be read, so one bad file blanks its own cells and is reported once, never the whole row."""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)

_LIMIT = 1 << 64  # no kernel counter is wider than 64 bits
MIB = 1024 * 1024  # bytes in a MiB, the unit of every memory column


def counter(token: bytes | str, *, signed: bool = False) -> int:
    """A kernel counter (0 to 2**64 - 1; from -2**63 when `signed`, e.g. a quota of -1);
    ValueError for anything else (a 400-digit number would overflow every float it meets)."""
    value = int(token)
    if not (-(_LIMIT >> 1) if signed else 0) <= value < _LIMIT:
        raise ValueError(f"{str(token)[:40]!r} is out of a counter's range")
    return value


class ReadErrors:
    """Files that could not be read or parsed: logged once per source and kind, counted for
    `/metrics`. A source is a file shape (`/proc/<pid>/io`), not one file, so a broken
    kernel does not log once per process."""

    def __init__(self) -> None:
        self.count = 0
        self._seen: set[tuple[str, str]] = set()

    def report(self, source: str, error: Exception, **context: object) -> None:
        """Record that `source` failed with `error`; the first of its kind is logged."""
        self.count += 1
        kind = type(error).__name__
        if (source, kind) not in self._seen:
            self._seen.add((source, kind))
            log.warning("read_error", source=source, kind=kind, error=str(error)[:300],
                        **context)  # fmt: skip


def delta(before: float | None, after: float | None) -> float | None:
    """The increase of a counter, never negative (a reset counts from zero); None unknown."""
    if before is None or after is None:
        return None
    return max(0.0, after - before)


def fmt(value: float | int | None, digits: int = 3) -> str:
    """A CSV cell: empty when unknown, whole numbers as they are, else `digits` decimals."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"
