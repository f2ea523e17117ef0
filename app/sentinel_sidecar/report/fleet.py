"""Many runs from a few inputs, and their groups. `report` expands each input into the runs it
holds — itself when it is one run, else every run below it, found by its `run.json` (local
output directories, spool directories, S3 run prefixes, in any mix) — keeps those that started
within `--since`/`--until`, and groups them by job (`--group-by`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sentinel_sidecar.delivery.s3 import parse_s3_uri
from sentinel_sidecar.report.runs import ReportError, Run, holds_a_run, s3_client
from sentinel_sidecar.spool.state import chunk_name
from sentinel_sidecar.spool.store import spool_files

RUN_JSON = "run.json"


def expand(source: str, *, instance_metadata: bool = False) -> list[str]:
    """The runs `source` holds: `[source]` when it is one run; else every run below it, in
    order; `[source]` again when none is found (reading it then says why)."""
    if source.startswith("s3://"):
        return _s3_runs(source, instance_metadata) or [source]
    directory = Path(source)
    if not directory.is_dir() or holds_a_run(directory):
        return [source]
    found = []
    for summary in sorted(directory.rglob(RUN_JSON)):
        parent = summary.parent
        if parent.name == "output" and spool_files(parent.parent):
            found.append(str(parent.parent))  # a spool dir: its rows, its output's run.json
        elif holds_a_run(parent):
            found.append(str(parent))
    return list(dict.fromkeys(found)) or [source]


def _s3_runs(uri: str, instance_metadata: bool) -> list[str]:
    """The run prefixes under `uri` (their `run.json`); empty when `uri` is one run itself or
    cannot be listed."""
    try:
        bucket, prefix = parse_s3_uri(uri)
    except ValueError as exc:
        raise ReportError(str(exc)) from exc
    base = f"{prefix}/" if prefix else ""
    s3 = s3_client(instance_metadata)
    keys = _keys(s3, bucket, base)
    if f"{base}{chunk_name(1)}" in keys or f"{base}{RUN_JSON}" in keys:
        return []
    runs = [key.removesuffix("/" + RUN_JSON) for key in keys if key.endswith("/" + RUN_JSON)]
    return [f"s3://{bucket}/{run}" for run in sorted(runs)]


def _keys(s3: Any, bucket: str, prefix: str) -> set[str]:
    """The keys under `prefix`; none when listing is refused (an uploader's credentials may
    read objects without listing them: the input is then read as one run, by name)."""
    from botocore.exceptions import ClientError

    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {item["Key"] for page in pages for item in page.get("Contents", [])}
    except ClientError:
        return set()


def group_key(run: Run, group_by: str) -> str:
    """The group of `run`: `job` (its job name, else a group of its own), `run`, `all` (one
    group), or `tag:<name>` (that tag, else a group of its own)."""
    if group_by == "all":
        return "all"
    identity = run.summary.identity if run.summary else {}

    def value(name: str) -> Any:
        field = identity.get(name)
        return field.get("value") if isinstance(field, dict) else None

    if group_by == "job":
        job = value("job_name")
        return f"job={job}" if job else f"run={run.source}"
    if group_by.startswith("tag:"):
        tags = value("tags")
        tag = group_by[len("tag:") :]
        found = tags.get(tag) if isinstance(tags, dict) else None
        return f"{tag}={found}" if found else f"run={run.source}"
    return f"run={run.source}"


def check_group_by(text: str) -> str:
    """`--group-by` as given; ValueError when it is not job, run, all or tag:<name>."""
    if text in ("job", "run", "all") or (text.startswith("tag:") and len(text) > len("tag:")):
        return text
    raise ValueError(text)


def started(run: Run) -> float | None:
    """When `run` started (UNIX time): its `run.json`, else its first row."""
    text = run.summary.started_at if run.summary else ""
    if text:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    stamps = run.values("timestamp")
    return stamps[0] if stamps else None


def within(runs: Iterable[Run], since: float | None, until: float | None) -> list[Run]:
    """The runs that started in [since, until) (a run with no start time is kept)."""
    kept = []
    for run in runs:
        at = started(run)
        if at is not None and ((since is not None and at < since) or
                               (until is not None and at >= until)):  # fmt: skip
            continue
        kept.append(run)
    return kept


def grouped(runs: Sequence[Run], group_by: str) -> dict[str, list[Run]]:
    """The runs by group, groups in the order their first run came."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run, group_by), []).append(run)
    return groups
