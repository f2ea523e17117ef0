"""What the spool's cap does with a long outage: rows shaped like the agent's (the 32 Sentinel
columns, a workload using 1.5 cores and 0.4-2 GiB) appended at a given interval for a given
time with nothing delivered, through the real `Spool` with the default cap and segment size.

    python -m bench.outage [--days 3] [--interval 1] [--max-bytes 268435456]

Prints what was kept (rows, bytes, the coarsest rows' length in time), what was merged or
given up, whether the totals and peaks are still exact, and the slowest append (a merge runs
inside one). Not a test: CI does not run it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import tempfile
import time
from pathlib import Path

from sentinel_sidecar.config import DEFAULTS
from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS, Schema, header_line
from sentinel_sidecar.spool.state import Loss
from sentinel_sidecar.spool.store import Spool, spool_files

START = 1_767_225_600.0  # 2026-01-01


def row(i: int, interval: float) -> str:
    """Sample `i`: CPU-seconds and bytes of the interval, memory of the moment."""
    cells = dict.fromkeys(SENTINEL_COLUMNS, "0")
    wave = math.sin(i / 5000)
    cells |= {
        "timestamp": f"{START + i * interval:.3f}",
        "system_processes": str(180 + i % 7),
        "system_utime": f"{1.9 * interval:.2f}",
        "system_stime": f"{0.2 * interval:.2f}",
        "system_cpu_usage": "2.1000",
        "system_memory_free_mib": f"{20000 - 1200 * wave:.3f}",
        "system_memory_used_mib": f"{4000 + 1200 * wave:.3f}",
        "system_disk_read_bytes": str(int(4096 * interval * (1 + i % 3))),
        "system_net_recv_bytes": str(int(9000 * interval)),
        "process_pid": "7",
        "process_children": str(3 + i % 2),
        "process_utime": f"{1.4 * interval:.4f}",
        "process_stime": f"{0.1 * interval:.4f}",
        "process_cpu_usage": "1.5000",
        "process_memory_mib": f"{1200 + 800 * wave:.3f}",
        "process_disk_read_bytes": str(int(2048 * interval * (1 + i % 3))),
    }
    return ",".join(cells.values()) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--max-bytes", type=int, default=DEFAULTS["spool_max_bytes"])
    parser.add_argument("--segment-bytes", type=int, default=DEFAULTS["spool_segment_bytes"])
    args = parser.parse_args()
    samples = round(args.days * 86400 / args.interval)
    directory = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    header = header_line(Schema.SENTINEL)
    spool = Spool(directory, header, segment_bytes=args.segment_bytes, max_bytes=args.max_bytes)
    spool.acknowledge(spool.data_start)  # the outage: nothing is ever delivered
    loss, slowest, most = Loss(), 0.0, 0
    utime = peak = 0.0
    started = time.perf_counter()
    for i in range(samples):
        line = row(i, args.interval)
        cells = line.split(",")
        utime += float(cells[SENTINEL_COLUMNS.index("process_utime")])
        peak = max(peak, float(cells[SENTINEL_COLUMNS.index("process_memory_mib")]))
        before = time.perf_counter()
        loss += spool.append(line)
        slowest = max(slowest, time.perf_counter() - before)
        most = max(most, spool.disk_bytes)
    took = time.perf_counter() - started
    spool.close()
    kept = [r for path in spool_files(directory) for r in path.read_text().splitlines()[1:]]
    stamps = [float(r.split(",", 1)[0]) for r in kept]
    longest = max(b - a for a, b in itertools.pairwise(stamps)) if len(kept) > 1 else 0
    kept_utime = sum(float(r.split(",")[SENTINEL_COLUMNS.index("process_utime")]) for r in kept)
    kept_peak = max(float(r.split(",")[SENTINEL_COLUMNS.index("process_memory_mib")]) for r in kept)
    shutil.rmtree(directory)
    print(f"outage of {args.days:g} days at {args.interval:g} s: {samples:,} samples, cap "
          f"{args.max_bytes:,} B, segments of {args.segment_bytes:,} B")  # fmt: skip
    print(f"  spool at most {most:,} B; kept {len(kept):,} rows; merged {loss.merged:,}, "
          f"dropped {loss.dropped:,}; rows + merged + dropped = "
          f"{len(kept) + loss.merged + loss.dropped:,}")  # fmt: skip
    print(f"  coarsest row covers {longest:,.1f} s; process CPU-seconds {kept_utime:,.2f} kept of "
          f"{utime:,.2f}; peak memory {kept_peak:,.3f} MiB kept of {peak:,.3f}")  # fmt: skip
    print(f"  {took:.1f} s in all, slowest append {slowest * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
