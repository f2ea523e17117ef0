"""`report`: what runs used, read back from what the agent delivered — a local output
directory, a spool directory, or a direct-S3 run prefix — and the requests and limits the
workload container should have (`recommend.py`), as a table, JSON, YAML or an HTML page."""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel_sidecar.delivery.destination import RunSummary
from sentinel_sidecar.delivery.s3 import parse_s3_uri
from sentinel_sidecar.identity.record import ContainerResources, amount
from sentinel_sidecar.report.recommend import Recommendation, Rules, Usage, recommend
from sentinel_sidecar.spool.state import LEGACY_NAME_DIGITS, NAME_DIGITS, chunk_name
from sentinel_sidecar.spool.store import spool_files

EXPECTED = (
    "a local output directory (000001.csv.gz, ...), a spool directory (segment-*.csv) or a "
    "direct-S3 run prefix (s3://bucket/prefix/<run>)"
)
COLUMNS = (
    "timestamp", "process_cpu_usage", "process_memory_mib", "process_disk_read_bytes",
    "process_disk_write_bytes", "process_gpu_usage", "process_gpu_vram_mib",
    "process_gpu_utilized", "cgroup_oom_kills",
)  # fmt: skip
EXIT_OOM_KILLED = 137  # SIGKILL: what the kernel's OOM killer leaves as a container's exit code
# Fewer samples of the workload than this and a recommendation would rest on noise: `report`
# says so and exits TOO_LITTLE instead.
MIN_SAMPLES = 5
NO_CREDENTIALS = (
    "no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
    "~/.aws, a web identity token); outside a pod the instance metadata service is not asked "
    "(AWS_EC2_METADATA_DISABLED=false asks it)"
)


class ReportError(Exception):
    """The input is not a delivered output, or a part of it is unreadable; one line."""


@dataclass
class Run:
    """One run's rows (only the columns a report needs, as floats; None for an empty cell) and
    its `run.json` when there is one."""

    source: str
    columns: dict[str, list[float | None]] = field(default_factory=dict)
    summary: RunSummary | None = None  # its run.json, when there is one

    @property
    def rows(self) -> int:
        return len(self.columns.get("timestamp", []))

    @property
    def workload_samples(self) -> int:
        """Rows in which the workload was seen using anything (CPU or memory)."""
        cpu = self.columns.get("process_cpu_usage", [])
        memory = self.columns.get("process_memory_mib", [])
        return sum(1 for c, m in zip(cpu, memory, strict=True) if (c or 0) > 0 or (m or 0) > 0)

    def values(self, column: str) -> list[float]:
        """The column's known values."""
        return [value for value in self.columns.get(column, []) if value is not None]

    @property
    def oom_killed(self) -> bool:
        """Ended OOM-killed: exit code 137 in its run.json, or an OOM kill in its cgroup (the
        extended schema's `cgroup_oom_kills`)."""
        code = self.summary.exit_code if self.summary else None
        return code == EXIT_OOM_KILLED or sum(self.values("cgroup_oom_kills")) > 0

    def usage(self) -> Usage:
        stamps = self.values("timestamp")
        hours = (stamps[-1] - stamps[0]) / 3600 if len(stamps) > 1 else 0.0
        return Usage(self.values("process_cpu_usage"), self.values("process_memory_mib"),
                     self.values("process_gpu_utilized"), hours, self.oom_killed)  # fmt: skip


# --- inputs -------------------------------------------------------------------------------------


def load(source: str, *, instance_metadata: bool = False) -> Run:
    """One run from an output directory, a spool directory or an S3 run prefix (credentials
    from the instance metadata service only with `instance_metadata`)."""
    if source.startswith("s3://"):
        return _from_s3(source, instance_metadata)
    directory = Path(source)
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is a file"
        raise ReportError(f"{directory} {what}; expected {EXPECTED}")
    run = Run(str(directory))
    chunks = _chunks(directory)
    if chunks:
        for path in chunks:
            _add_rows(run, _gunzip(path.read_bytes(), str(path)), str(path))
        summary = directory / "run.json"
    elif spooled := spool_files(directory):
        for path in spooled:
            _add_rows(run, path.read_text(errors="replace"), str(path))
        summary = directory / "output" / "run.json"
    else:
        inside = [child for child in sorted(directory.iterdir()) if holds_a_run(child)]
        hint = f"; did you mean {inside[0]}?" if inside else ""
        raise ReportError(f"{directory} holds no chunk; expected {EXPECTED}{hint}")
    if summary.is_file():
        run.summary = _summary(summary.read_bytes(), str(summary))
    return run


def _chunks(directory: Path) -> list[Path]:
    """The chunk files `000001.csv.gz`, ... (or an older run's `0001.csv.gz`, ...) in the
    order of their numbers, whatever their width."""
    numbered = [path for path in directory.glob("[0-9]*.csv.gz") if path.name[:-7].isdigit()]
    return sorted(numbered, key=lambda path: int(path.name[:-7]))


def holds_a_run(path: Path) -> bool:
    """A directory `report` can read (a run's output or spool), for "did you mean"."""
    return path.is_dir() and bool(spool_files(path) or _chunks(path))


@functools.cache
def s3_client(instance_metadata: bool) -> Any:
    """An S3 client on boto3's credential chain, without its instance-metadata step unless
    asked (on a laptop that step waits on 169.254.169.254); ReportError without credentials.
    One per process: every input of a report shares it."""
    import boto3
    import botocore.session

    session = botocore.session.get_session()
    if not instance_metadata:
        session.get_component("credential_provider").remove("iam-role")
    if session.get_credentials() is None:
        raise ReportError(NO_CREDENTIALS)
    return boto3.session.Session(botocore_session=session).client("s3")


def _from_s3(uri: str, instance_metadata: bool) -> Run:
    """The chunks `000001.csv.gz`, ... and `run.json` under a run prefix, fetched by name (no
    listing: an uploader's credentials may not list)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        bucket, prefix = parse_s3_uri(uri)
    except ValueError as exc:
        raise ReportError(f"{exc}; expected {EXPECTED}") from exc
    s3 = s3_client(instance_metadata)
    run = Run(uri)

    def get(name: str) -> bytes | None:
        key = f"{prefix}/{name}" if prefix else name
        try:
            return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise ReportError(f"s3://{bucket}/{key}: {exc}") from exc
        except BotoCoreError as exc:
            raise ReportError(f"s3://{bucket}/{key}: {exc}") from exc

    # Chunk names are 6 digits wide; runs of older versions wrote 4.
    for digits in (NAME_DIGITS, LEGACY_NAME_DIGITS):
        seq = 1
        while (body := get(chunk_name(seq, digits))) is not None:
            where = f"{uri}/{chunk_name(seq, digits)}"
            _add_rows(run, _gunzip(body, where), where)
            seq += 1
        if seq > 1:
            break
    else:
        raise ReportError(f"{uri} holds no chunk 000001.csv.gz; expected {EXPECTED}")
    summary = get("run.json")
    if summary is not None:
        run.summary = _summary(summary, f"{uri}/run.json")
    return run


def _gunzip(body: bytes, where: str) -> str:
    try:
        return gzip.decompress(body).decode()
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ReportError(f"{where}: not a gzipped CSV chunk ({exc})") from exc


def _summary(body: bytes, where: str) -> RunSummary | None:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ReportError(f"{where}: not JSON ({exc})") from exc
    return RunSummary.from_json(data) if isinstance(data, dict) else None


def _add_rows(run: Run, text: str, where: str) -> None:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or "timestamp" not in header:
        raise ReportError(f"{where}: no CSV header with a timestamp column")
    positions = {column: header.index(column) for column in COLUMNS if column in header}
    for column in COLUMNS:
        run.columns.setdefault(column, [])
    try:
        for number, row in enumerate(reader, start=2):
            if len(row) != len(header):
                raise ReportError(f"{where}: line {number} has {len(row)} cells, not {len(header)}")
            for column in COLUMNS:
                position = positions.get(column)
                cell = row[position] if position is not None else ""
                run.columns[column].append(float(cell) if cell else None)
    except ValueError as exc:
        raise ReportError(f"{where}: {exc}") from exc


# --- the report ---------------------------------------------------------------------------------


def build(
    sources: Sequence[str], rules: Rules, *, instance_metadata: bool = False
) -> tuple[list[Run], Recommendation]:
    """The runs and one recommendation over all of them; the current requests and limits of
    the latest run that recorded them."""
    runs = [load(source, instance_metadata=instance_metadata) for source in sources]
    return runs, recommend_runs(runs, rules)


def recommend_runs(runs: Sequence[Run], rules: Rules) -> Recommendation:
    """One recommendation over `runs`, beside the current requests and limits of the latest
    run that recorded them."""
    current = ContainerResources()
    for run in runs:
        current = (run.summary.resources if run.summary else None) or current
    return recommend([run.usage() for run in runs], rules, current)


def too_little(runs: Sequence[Run]) -> str | None:
    """Why no recommendation can be made from these runs, or None when one can."""
    samples = sum(run.workload_samples for run in runs)
    if samples >= MIN_SAMPLES:
        return None
    rows = sum(run.rows for run in runs)
    seen = "the workload was never seen" if samples == 0 else f"{samples} of the workload"
    return (
        f"too little to recommend from: {rows} row(s), {seen}; at least {MIN_SAMPLES} samples "
        "of the workload are needed (a longer run, or a shorter --interval)"
    )


def as_dict(runs: Sequence[Run], recommendation: Recommendation) -> dict[str, Any]:
    """`--format json`: the recommendation, its basis, the current values and the runs."""
    return {
        "resources": recommendation.resources(),
        "basis": {
            "cpu_percentile_cores": round(recommendation.cpu_basis, 4),
            "memory_peak_mib": round(recommendation.memory_peak_mib, 1),
            "runs": recommendation.runs,
            "oom_killed_runs": recommendation.oom_runs,
            "rows": recommendation.rows,
            "hours": round(recommendation.hours, 3),
        },
        "flags": list(recommendation.flags),
        "current": dict(recommendation.current),
        "difference": recommendation.savings(),
        "runs": [
            {
                "source": run.source,
                "rows": run.rows,
                "run_id": run.summary.run_id if run.summary else None,
                "oom_killed": run.oom_killed,
            }
            for run in runs
        ],
    }


def as_yaml(recommendation: Recommendation) -> str:
    """`--format yaml`: the `resources:` block, ready to paste into a container spec."""
    import yaml

    return str(yaml.safe_dump({"resources": recommendation.resources()}, sort_keys=False))


def as_table(recommendation: Recommendation, rules: Rules) -> str:
    """The terminal table: what to set, what it rests on, and the current values beside."""
    rec = recommendation
    current = rec.current
    lines = [
        f"{rec.runs} run(s), {rec.rows} rows, " + (
            f"{rec.hours:.2f} h" if rec.hours >= 1 else f"{rec.hours * 60:.1f} min"
        ),
        "",
        f"{'':18}{'recommended':>14}{'current':>12}  basis",
        _line("cpu request", rec.cpu_request, current, "requests", "cpu",
              f"p{rules.cpu_percentile:g} of process_cpu_usage: {rec.cpu_basis:.3f} cores"),
        _line("cpu limit", rec.cpu_limit or "none", current, "limits", "cpu",
              "none: a CPU limit throttles a job that could use idle cores"
              if rec.cpu_limit is None else f"request x {rules.cpu_limit_factor:g}"),
        _line("memory request", rec.memory, current, "requests", "memory",
              f"peak process_memory_mib {rec.memory_peak_mib:.1f}"
              + (" raised for OOM kills" if rec.oom_runs else "")
              + f" + {rules.memory_margin:.0%}"),
        _line("memory limit", rec.memory, current, "limits", "memory",
              "= request: a pod over its request is evicted first"),
    ]  # fmt: skip
    if rec.gpus:
        lines.append(_line("nvidia.com/gpu", str(rec.gpus), current, "limits", "nvidia.com/gpu",
                           "GPUs the workload kept busy at once"))  # fmt: skip
    if rec.flags:
        lines += ["", *(f"flag: {flag}" for flag in rec.flags)]
    savings = rec.savings()
    if savings:
        parts = [f"{value:+.2f} {unit.replace('_', '-')}" for unit, value in savings.items()]
        lines += ["", "current requests minus recommended, over these runs: " + ", ".join(parts)]
    return "\n".join(lines)


def _line(
    name: str, value: str, current: ContainerResources, kind: str, key: str, basis: str
) -> str:
    now = amount(current, kind, key)
    return f"{name:18}{value:>14}{now:>12}  {basis}"
