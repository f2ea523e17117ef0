"""A generated fleet: 51 runs of five jobs as the agent leaves them — chunks of 60 rows and a
`run.json` under Hive-style `job=<job>/run=<pod>-<start>/` paths, locally or in S3 — with OOM-
killed runs (exit 137, the pod's OOMKilled after a restart, a cgroup OOM kill in the extended
schema), runs too short to judge, a corrupt chunk and a run without `run.json`. Each run keeps
its rows, so a test computes what `report` must say without the report's code."""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sentinel_sidecar.delivery.s3 import partition_value
from sentinel_sidecar.measure.rows import EXTENDED_COLUMNS, SENTINEL_COLUMNS

ROWS_PER_CHUNK = 60
CORRUPT = b"\x1f\x8b\x08\x00 a chunk cut short by a crash"  # a gzip header, then garbage


@dataclass
class FleetRun:
    """One run: its rows (timestamp, cpu cores, memory MiB) and how it ended."""

    job: str | None
    pod: str
    started: datetime
    rows: list[tuple[float, float, float]]
    requests: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = 0
    pod_oom_killed: bool = False  # the pod said OOMKilled (a restart ended 0)
    cgroup_oom_row: int | None = None  # extended schema: an OOM kill counted in this row
    corrupt_chunk: int | None = None  # this chunk (from 1) is not gzip
    with_summary: bool = True

    @property
    def key(self) -> str:
        """Where it lies under the fleet's prefix, as direct-S3 mode writes it."""
        stamp = self.started.strftime("%Y%m%dT%H%M%SZ")
        return f"job={partition_value(self.job)}/run={self.pod}-{stamp}"

    @property
    def counted(self) -> list[tuple[float, float, float]]:
        """The rows `report` can read: all but those of the corrupt chunk."""
        if self.corrupt_chunk is None:
            return self.rows
        first = (self.corrupt_chunk - 1) * ROWS_PER_CHUNK
        return self.rows[:first] + self.rows[first + ROWS_PER_CHUNK :]

    @property
    def oom_killed(self) -> bool:
        return self.exit_code == 137 or self.pod_oom_killed or self.cgroup_oom_row is not None

    def objects(self) -> dict[str, bytes]:
        """Its files by name: the chunks and run.json."""
        extended = self.cgroup_oom_row is not None
        columns = SENTINEL_COLUMNS + (EXTENDED_COLUMNS if extended else ())
        header = ",".join(columns) + "\n"
        found: dict[str, bytes] = {}
        for seq, start in enumerate(range(0, len(self.rows), ROWS_PER_CHUNK), start=1):
            lines = [
                _line(columns, stamp, cpu, memory, int(start + i == self.cgroup_oom_row))
                for i, (stamp, cpu, memory) in enumerate(self.rows[start : start + ROWS_PER_CHUNK])
            ]
            body = gzip.compress((header + "".join(lines)).encode())
            found[f"{seq:06d}.csv.gz"] = CORRUPT if seq == self.corrupt_chunk else body
        if self.with_summary:
            found["run.json"] = json.dumps(self.summary()).encode()
        return found

    def summary(self) -> dict[str, Any]:
        identity = {"pod_name": {"value": self.pod, "source": "pod"}}
        if self.job:
            identity["job_name"] = {"value": self.job, "source": "pod"}
        resources = {"requests": self.requests} if self.requests else {}
        return {"run_id": None, "started_at": self.started.isoformat(),
                "exit_code": self.exit_code, "oom_killed": self.pod_oom_killed,
                "schema": "extended" if self.cgroup_oom_row is not None else "sentinel",
                "identity": identity, "resources": resources}  # fmt: skip


def _line(columns: tuple[str, ...], stamp: float, cpu: float, memory: float, oom: int) -> str:
    cells = dict.fromkeys(columns, "0")
    cells |= {"timestamp": f"{stamp:.3f}", "process_cpu_usage": f"{cpu:.2f}",
              "process_memory_mib": f"{memory:.1f}", "process_disk_read_bytes": "4096",
              "process_utime": f"{cpu * 0.7:.2f}", "process_stime": f"{cpu * 0.3:.2f}"}  # fmt: skip
    if "cgroup_oom_kills" in cells:
        cells["cgroup_oom_kills"] = str(oom)
    return ",".join(cells[column] for column in columns) + "\n"


# job: (runs, rows per run, CPU cores around, memory MiB around, current requests)
JOBS: dict[str, tuple[int, int, float, float, dict[str, str]]] = {
    "train": (14, 300, 3.0, 6000.0, {"cpu": "8", "memory": "8Gi"}),
    "etl": (14, 240, 0.5, 900.0, {"cpu": "2", "memory": "2Gi"}),
    "infer": (10, 180, 1.2, 2500.0, {"cpu": "1", "memory": "4Gi"}),
    "backfill": (10, 120, 0.2, 300.0, {"cpu": "500m", "memory": "1Gi"}),
    "tiny": (2, 2, 0.1, 50.0, {}),  # too short to judge: 4 samples in all
}
START = datetime(2026, 11, 2, tzinfo=UTC)


def generate(seed: int = 25) -> list[FleetRun]:
    """The fleet: 51 runs, the same for the same seed."""
    rng = random.Random(seed)
    runs = []
    for number, (job, (count, length, cpu, memory, requests)) in enumerate(JOBS.items()):
        for index in range(count):
            started = START + timedelta(days=index, hours=number)
            first = started.timestamp()
            rows = [(first + i, round(max(0.0, rng.gauss(cpu, cpu / 4)), 2),
                     round(rng.uniform(0.6, 1.0) * memory, 1)) for i in range(length)]  # fmt: skip
            runs.append(FleetRun(job, f"{job}-{index:02d}", started, rows, dict(requests)))
    by_pod = {run.pod: run for run in runs}
    by_pod["train-03"].exit_code = 137  # the kernel's OOM killer ended it
    by_pod["train-07"].pod_oom_killed = True  # OOMKilled, restarted, then finished
    by_pod["infer-04"].cgroup_oom_row = 100  # a child OOM-killed inside its cgroup
    by_pod["etl-05"].corrupt_chunk = 2
    by_pod["train-10"].rows = by_pod["train-10"].rows[:3]  # too short alone; counted in its job
    loose = [(START.timestamp() + i, 0.7, 700.0) for i in range(90)]
    runs.append(FleetRun(None, "adhoc-00", START, loose, {}, with_summary=False))
    return runs


def write_local(runs: list[FleetRun], directory: Path) -> None:
    for run in runs:
        where = directory / run.key
        where.mkdir(parents=True)
        for name, body in run.objects().items():
            (where / name).write_bytes(body)


def write_s3(runs: list[FleetRun], s3: Any, bucket: str, prefix: str) -> None:
    for run in runs:
        for name, body in run.objects().items():
            s3.put_object(Bucket=bucket, Key=f"{prefix}/{run.key}/{name}", Body=body)
