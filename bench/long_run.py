"""A week compressed in time: the real agent in local mode at a fast interval until it has
written `--rows` rows (a week at 1 s is 604,800), uploading every `--upload-interval`. What
must not grow with a run's length is sampled every few seconds: the agent's RSS and CPU per
tick, the spool's bytes (its delivered segments are deleted), the output's bytes, state.json's
size. Rows are counted in the delivered chunks.

    python -m bench.long_run [--rows 604800] [--interval 0.002] [--upload-interval 0.5]

Prints a Markdown table (first tenth of the run against the last tenth), writes the figures to
bench/results/long-run-<date>.json and the table to docs/PERFORMANCE.md. Not a test: CI does
not run it.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import ROOT, start_agent
from bench.workload import Workload

TICKS = os.sysconf("SC_CLK_TCK")
START = "<!-- long-run: made by `python -m bench.long_run` -->"
END = "<!-- /long-run -->"


@dataclass(frozen=True)
class Sample:
    """One look at the agent and its files."""

    seconds: float
    rows: int
    cpu_s: float
    rss_mib: float
    spool_bytes: int
    output_bytes: int
    state_bytes: int
    chunks: int


def _cpu_and_rss(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return cpu, int(line.split()[1]) / 1024
    return cpu, 0.0


def _bytes(directory: Path, pattern: str) -> int:
    return sum(path.stat().st_size for path in directory.glob(pattern) if path.is_file())


class RowCounter:
    """Rows delivered: the spool deletes delivered segments, so the rows are counted in the
    chunks of the output directory, each chunk read once as it arrives."""

    def __init__(self, output: Path) -> None:
        self.output = output
        self.rows = 0
        self.chunks = 0

    def count(self) -> int:
        while (path := self.output / f"{self.chunks + 1:06d}.csv.gz").exists():
            self.rows += gzip.decompress(path.read_bytes()).count(b"\n") - 1  # not the header
            self.chunks += 1
        return self.rows


def run(rows: int, interval: float, upload_interval: float, processes: int) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-long-run-"))
    spool, output = base / "spool", base / "out"
    workload = Workload(processes)
    agent = start_agent(workload.pid, interval, spool, "--output-dir", str(output),
                        "--upload-interval", str(upload_interval), "--health-port", "0",
                        "--progress-interval", "0")  # fmt: skip
    counter = RowCounter(output)
    samples: list[Sample] = []
    started = time.monotonic()
    try:
        while not samples or samples[-1].rows < rows:
            time.sleep(5)
            cpu, rss = _cpu_and_rss(agent.pid)
            state = spool / "state.json"
            samples.append(Sample(
                seconds=round(time.monotonic() - started, 1), rows=counter.count(), cpu_s=cpu,
                rss_mib=round(rss, 1), spool_bytes=_bytes(spool, "*"),
                output_bytes=_bytes(output, "*"), chunks=len(list(output.glob("*.csv.gz"))),
                state_bytes=state.stat().st_size if state.exists() else 0,
            ))  # fmt: skip
            print(
                f"{samples[-1].seconds:>8.0f} s {samples[-1].rows:>8} rows "
                f"{rss:6.1f} MiB {samples[-1].spool_bytes / 1e6:8.1f} MB spool",
                flush=True,
            )
    finally:
        agent.terminate()
        agent.wait(120)
        workload.stop()
        shutil.rmtree(base, ignore_errors=True)
    tenth = max(1, len(samples) // 10)
    first, last = samples[: tenth + 1], samples[-tenth - 1 :]

    def per_tick_ms(window: list[Sample]) -> float:
        ticks = window[-1].rows - window[0].rows
        return round((window[-1].cpu_s - window[0].cpu_s) / ticks * 1000, 3) if ticks else 0.0

    return {
        "rows": samples[-1].rows,
        "interval": interval,
        "upload_interval": upload_interval,
        "processes": processes,
        "seconds": samples[-1].seconds,
        "chunks": samples[-1].chunks,
        "cpu_ms_per_tick_first_tenth": per_tick_ms(first),
        "cpu_ms_per_tick_last_tenth": per_tick_ms(last),
        "rss_mib_first_tenth": max(s.rss_mib for s in first),
        "rss_mib_last_tenth": max(s.rss_mib for s in last),
        "spool_bytes_max": max(s.spool_bytes for s in samples),
        "output_bytes_end": samples[-1].output_bytes,
        "state_bytes_start": samples[0].state_bytes,
        "state_bytes_end": samples[-1].state_bytes,
        "samples": [asdict(s) for s in samples],
    }


def table(result: dict[str, Any]) -> str:
    rows = [
        ("rows / chunks", f"{result['rows']:,} / {result['chunks']:,}"),
        ("CPU per tick, first vs last tenth",
         f"{result['cpu_ms_per_tick_first_tenth']} ms / {result['cpu_ms_per_tick_last_tenth']} ms"),
        ("RSS, first vs last tenth",
         f"{result['rss_mib_first_tenth']} MiB / {result['rss_mib_last_tenth']} MiB"),
        ("spool at most", f"{result['spool_bytes_max'] / 1e6:.1f} MB"),
        ("output at the end", f"{result['output_bytes_end'] / 1e6:.1f} MB"),
        ("state.json, start vs end",
         f"{result['state_bytes_start']} B / {result['state_bytes_end']} B"),
    ]  # fmt: skip
    head = (f"Measured {result['date']}: {result['rows']:,} rows at interval "
            f"{result['interval']} s, uploads every {result['upload_interval']} s, "
            f"{result['processes']} processes, "
            f"{result['seconds'] / 60:.0f} min")  # fmt: skip
    lines = [head, "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=604_800)
    parser.add_argument("--interval", type=float, default=0.002)
    parser.add_argument("--upload-interval", type=float, default=0.5)
    parser.add_argument("--processes", type=int, default=10)
    args = parser.parse_args()
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    result = {"date": date, **run(args.rows, args.interval, args.upload_interval, args.processes)}
    results = ROOT / "bench" / "results" / f"long-run-{date}.json"
    results.write_text(json.dumps(result, indent=1) + "\n")
    text = table(result)
    print(text)
    performance = ROOT / "docs" / "PERFORMANCE.md"
    page = performance.read_text()
    block = f"{START}\n{text}{END}"
    if START in page:
        page = page[: page.index(START)] + block + page[page.index(END) + len(END) :]
    else:
        page = page.rstrip() + f"\n\n## Long runs (a week compressed in time)\n\n{block}\n"
    performance.write_text(page)


if __name__ == "__main__":
    main()
