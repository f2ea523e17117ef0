"""`report` on a fleet: 100 runs of five jobs, each a week of 1 s rows (60 M rows) in chunks of
60 rows as local mode writes them (10,080 chunks a run), and the single-run week alone. Prints
wall time and CPU-seconds of the `report` process (wait4) and its peak RSS (its own VmHWM as it
exits: wait4's counts the bench's memory from before the exec too). One week of chunks is
generated once; the other runs are hard links to it (the engine reads every file of every run;
the page cache holds the 40 MB, as it would a fleet read twice). Not run in CI.

    python -m bench.fleet [--runs 100] [--days 7] [--dir /var/tmp/bench-fleet] [--keep]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS

JOBS = ("train", "etl", "infer", "backfill", "nightly")
ROWS_PER_CHUNK = 60  # local mode's default: a chunk a minute at 1 s


def week_of_chunks(directory: Path, rows: int) -> list[Path]:
    """`rows` rows of 1 s, a workload whose CPU and memory wander, in chunks of 60."""
    directory.mkdir(parents=True)
    rng = random.Random(60)
    header = ",".join(SENTINEL_COLUMNS) + "\n"
    first = datetime(2026, 11, 2, tzinfo=UTC).timestamp()
    chunks = []
    cpu, memory = 2.0, 4000.0
    for seq, start in enumerate(range(0, rows, ROWS_PER_CHUNK), start=1):
        lines = []
        for i in range(start, min(start + ROWS_PER_CHUNK, rows)):
            cpu = min(8.0, max(0.0, cpu + rng.gauss(0, 0.05)))
            memory = min(16000.0, max(500.0, memory + rng.gauss(0, 5)))
            node = ["1"] * 24  # node-wide columns and pid/children: not what a report reads
            lines.append(",".join([f"{first + i:.3f}", *node, f"{cpu:.4f}", f"{memory:.3f}",
                                   "4096", "8192", "0", "0", "0"]))  # fmt: skip
        path = directory / f"{seq:06d}.csv.gz"
        path.write_bytes(gzip.compress((header + "\n".join(lines) + "\n").encode(), 6))
        chunks.append(path)
    return chunks


def fleet(directory: Path, chunks: list[Path], runs: int) -> Path:
    """`runs` runs of the five jobs, Hive-style, each its chunks (hard links) and run.json."""
    root = directory / "fleet"
    for number in range(runs):
        job = JOBS[number % len(JOBS)]
        started = datetime(2026, 11, 2, tzinfo=UTC) + timedelta(minutes=number)
        run = root / f"job={job}" / f"run={job}-{number:03d}-{started:%Y%m%dT%H%M%SZ}"
        run.mkdir(parents=True)
        for chunk in chunks:
            os.link(chunk, run / chunk.name)
        summary = {"started_at": started.isoformat(), "exit_code": 0,
                   "identity": {"job_name": {"value": job, "source": "pod"}},
                   "resources": {"requests": {"cpu": "8", "memory": "16Gi"}}}  # fmt: skip
        (run / "run.json").write_text(json.dumps(summary))
    return root


# `sentinel-sidecar` with its VmHWM written to $BENCH_HWM as it exits.
_MEASURED = """
import atexit, os, runpy, sys

def hwm():
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    with open(os.environ["BENCH_HWM"], "w") as out:
        out.write(peak)

atexit.register(hwm)
sys.argv = ["sentinel-sidecar", *sys.argv[1:]]
runpy.run_module("sentinel_sidecar", run_name="__main__")
"""


def timed(*args: str) -> tuple[float, float, float, str]:
    """Wall seconds, CPU-seconds and peak RSS (MiB) of one `report`, and what it printed."""
    with tempfile.TemporaryDirectory() as scratch:
        out, err, hwm = (Path(scratch) / name for name in ("out", "err", "hwm"))
        with out.open("w") as stdout, err.open("w") as stderr:
            started = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-c", _MEASURED, "report", *args],
                stdout=stdout, stderr=stderr, env={**os.environ, "BENCH_HWM": str(hwm)},
            )  # fmt: skip
            _pid, status, usage = os.wait4(process.pid, 0)
            wall = time.monotonic() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise RuntimeError(f"report exited {process.returncode}: {err.read_text()[-500:]}")
        peak = int(hwm.read_text()) / 1024
        return wall, usage.ru_utime + usage.ru_stime, peak, out.read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp/bench-fleet"))
    parser.add_argument("--keep", action="store_true", help="keep the generated fleet")
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    rows = int(args.days * 86400)
    made = time.monotonic()
    chunks = week_of_chunks(args.dir / "chunks", rows)
    root = fleet(args.dir, chunks, args.runs)
    print(f"fleet: {args.runs} runs x {rows} rows = {args.runs * rows / 1e6:.1f} M rows in "
          f"{args.runs * len(chunks)} chunks, made in {time.monotonic() - made:.0f} s")  # fmt: skip
    try:
        one = next(root.glob("job=train/run=*"))
        single = timed(str(one))
        print(f"one run ({rows} rows): {single[0]:.1f} s wall, {single[1]:.1f} CPU-s, "
              f"peak RSS {single[2]:.1f} MiB")  # fmt: skip
        whole = timed(str(root))
        print(f"fleet ({args.runs} runs): {whole[0]:.1f} s wall, {whole[1]:.1f} CPU-s, "
              f"peak RSS {whole[2]:.1f} MiB")  # fmt: skip
        print(whole[3])
        stamp = datetime.now(UTC).strftime("%Y-%m-%d-%H%M")
        result = {"runs": args.runs, "rows_per_run": rows, "chunks_per_run": len(chunks),
                  "single": dict(zip(("wall_s", "cpu_s", "peak_rss_mib"), single[:3], strict=True)),
                  "fleet": dict(zip(("wall_s", "cpu_s", "peak_rss_mib"), whole[:3], strict=True)),
                  "cpus": os.cpu_count()}  # fmt: skip
        out = Path(__file__).parent / "results" / f"fleet-{stamp}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {out}")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
