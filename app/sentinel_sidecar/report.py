"""Summaries of delivered chunks: what the workload used, read back from the gzipped CSVs."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path


class ReportError(Exception):
    """The input is not a delivered output, or a chunk of it is unreadable; one line."""


EXPECTED = "a local output directory holding 0001.csv.gz, 0002.csv.gz, ... (output_dir)"


def chunk_paths(directory: Path) -> list[Path]:
    """The chunk files of a local output directory, in sequence order; ReportError when
    `directory` is none."""
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is a file"
        raise ReportError(f"{directory} {what}; expected {EXPECTED}")
    paths = sorted(directory.glob("[0-9][0-9][0-9][0-9]*.csv.gz"))
    if not paths:
        if (directory / "metrics.csv").exists():
            raise ReportError(
                f"{directory} is a spool, not an output; its chunks are in {directory / 'output'}"
            )
        raise ReportError(f"{directory} holds no chunk; expected {EXPECTED}")
    return paths


def read_rows(directory: Path) -> Iterator[dict[str, str]]:
    """Every row of every chunk, in order; ReportError naming a chunk that is not a gzipped
    CSV with a header."""
    for path in chunk_paths(directory):
        try:
            text = gzip.decompress(path.read_bytes()).decode()
        except (OSError, EOFError, UnicodeDecodeError) as exc:
            raise ReportError(f"{path}: not a gzipped CSV chunk ({exc})") from exc
        rows = csv.DictReader(io.StringIO(text))
        if not rows.fieldnames or "timestamp" not in rows.fieldnames:
            raise ReportError(f"{path}: no CSV header with a timestamp column")
        yield from rows


def _floats(rows: list[dict[str, str]], column: str) -> list[float]:
    try:
        return [float(row[column]) for row in rows if row.get(column)]
    except ValueError as exc:
        raise ReportError(f"column {column}: {exc}") from exc


def summarize(directory: Path) -> dict[str, float | int]:
    """Rows, peak memory, mean/peak CPU cores and bytes read/written of the workload."""
    rows = list(read_rows(directory))
    cpu = _floats(rows, "process_cpu_usage")
    memory = _floats(rows, "process_memory_mib")
    return {
        "chunks": len(chunk_paths(directory)),
        "rows": len(rows),
        "peak_memory_mib": round(max(memory, default=0.0), 1),
        "mean_cpu_cores": round(sum(cpu) / len(cpu), 3) if cpu else 0.0,
        "peak_cpu_cores": round(max(cpu, default=0.0), 3),
        "read_bytes": int(sum(_floats(rows, "process_disk_read_bytes"))),
        "written_bytes": int(sum(_floats(rows, "process_disk_write_bytes"))),
    }


def render(summary: dict[str, float | int]) -> str:
    """The summary as aligned `name: value` lines."""
    width = max(len(name) for name in summary)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in summary.items())
