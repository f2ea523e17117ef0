"""Many runs from a few inputs, and their groups. `report` expands each input into the runs it
holds — itself when it is one run, else every run below it, found by its `run.json` or its
first chunk (local output directories, spool directories, S3 run prefixes, in any mix) — keeps
those that started within `--since`/`--until`, groups them by job (`--group-by`), and makes one
recommendation per group from what the engine measured."""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sentinel_sidecar.delivery.s3 import parse_s3_uri
from sentinel_sidecar.identity.record import ContainerResources
from sentinel_sidecar.report.recommend import (
    Recommendation,
    Rules,
    Usage,
    percentile,
    recommend,
)
from sentinel_sidecar.report.runs import (
    DEFAULT_ACCESS,
    ReportError,
    Run,
    S3Access,
    chunk_number,
    holds_a_run,
    load,
    s3_keys,
    s3_run,
)

RUN_JSON = "run.json"
# Fewer samples of the workload than this and a recommendation would rest on noise: the group
# says so instead.
MIN_SAMPLES = 5


@dataclass(frozen=True)
class Group:
    """Runs of one job and what to set for it; `refused` says why there is no recommendation."""

    key: str
    runs: Sequence[Run]
    recommendation: Recommendation | None
    refused: str | None = None

    @property
    def wasted_core_hours(self) -> float:
        """Core-hours its current requests hold beyond the recommendation (-inf: unknown)."""
        savings = self.recommendation.savings() if self.recommendation else None
        return (savings or {}).get("core_hours", -math.inf)

    @property
    def flags(self) -> tuple[str, ...]:
        """The recommendation's flags, and the chunks the engine left out or read in part."""
        own = self.recommendation.flags if self.recommendation else ()
        troubles = [why for run in self.runs if run.measured for why in run.measured.troubles]
        if not troubles:
            return own
        return (*own, f"unreadable: {len(troubles)} chunk(s) left out or read in part, first "
                      f"{troubles[0]}")  # fmt: skip


def runs_in(source: str, *, access: S3Access = DEFAULT_ACCESS) -> list[Run]:
    """The runs `source` holds: itself when it is one run; else every run below it, in order
    (an S3 prefix listed once for all of them); itself again when none is found (reading it
    then says why)."""
    if source.startswith("s3://"):
        return _s3_runs(source, access) or [load(source, access=access)]
    directory = Path(source)
    if not directory.is_dir() or holds_a_run(directory):
        return [load(source)]
    found = []
    for parent, children, _files in os.walk(directory):
        if holds_a_run(Path(parent)):
            found.append(parent)
            children.clear()  # a spool dir's output/ is the same run
    return [load(path) for path in sorted(found)] or [load(source)]


def _s3_runs(uri: str, access: S3Access) -> list[Run]:
    """The runs under `uri` (each prefix with a `run.json` or a chunk), from one listing: only
    `uri`'s own when it is a run itself; none when it cannot be listed."""
    try:
        bucket, prefix = parse_s3_uri(uri)
    except ValueError as exc:
        raise ReportError(str(exc)) from exc
    base = f"{prefix}/" if prefix else ""
    names: dict[str, set[str]] = {}
    for key in s3_keys(bucket, base, access):
        parent, _, name = key.rpartition("/")
        if name == RUN_JSON or chunk_number(name):
            names.setdefault(parent, set()).add(name)
    own = base.rstrip("/")
    chosen = [own] if own in names else sorted(names)
    return [s3_run(bucket, f"{run}/" if run else "", names[run], access)
            for run in chosen]  # fmt: skip


def group_key(run: Run, group_by: Sequence[str]) -> str:
    """The group of `run`: `all` (one group), `run` (a group each), or the first of `job` (its
    job name) and `tag:<name>` (that tag) in `group_by` that the run has; else its own group."""
    if tuple(group_by) == ("all",):
        return "all"
    identity = run.summary.identity if run.summary else {}

    def value(name: str) -> Any:
        field = identity.get(name)
        return field.get("value") if isinstance(field, dict) else None

    tags = value("tags")
    for key in group_by:
        if key == "job" and value("job_name"):
            return f"job={value('job_name')}"
        tag = key.removeprefix("tag:")
        if key.startswith("tag:") and isinstance(tags, dict) and tags.get(tag):
            return f"{tag}={tags[tag]}"
    return f"run={run.source}"


def check_group_by(text: str) -> tuple[str, ...]:
    """`--group-by` as keys tried in order: `run` or `all` alone, or a comma-separated list of
    `job` and `tag:<name>`; ValueError when it is none of these."""
    keys = tuple(text.split(","))
    if keys in (("run",), ("all",)):
        return keys
    if all(key == "job" or (key.startswith("tag:") and len(key) > len("tag:")) for key in keys):
        return keys
    raise ValueError(text)


def started(run: Run) -> float | None:
    """When `run` started (UNIX time): its `run.json`, else its first row."""
    text = run.summary.started_at if run.summary else ""
    if text:
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return run.figures.first


def within(runs: Iterable[Run], since: float | None, until: float | None) -> list[Run]:
    """The runs that started in [since, until) (a run with no start time yet is kept)."""
    kept = []
    for run in runs:
        at = started(run)
        if at is not None and ((since is not None and at < since) or
                               (until is not None and at >= until)):  # fmt: skip
            continue
        kept.append(run)
    return kept


def grouped(runs: Sequence[Run], group_by: Sequence[str]) -> dict[str, list[Run]]:
    """The runs by group, groups in the order their first run came."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(group_key(run, group_by), []).append(run)
    return groups


def too_little(runs: Sequence[Run]) -> str | None:
    """Why no recommendation can be made from these measured runs, or None when one can."""
    figures = [run.figures for run in runs]
    samples = sum(figure.workload_samples for figure in figures)
    if samples >= MIN_SAMPLES:
        return None
    rows = sum(figure.rows for figure in figures)
    seen = "the workload was never seen" if samples == 0 else f"{samples} of the workload"
    return (
        f"too little to recommend from: {rows} row(s), {seen}; at least {MIN_SAMPLES} samples "
        "of the workload are needed (a longer run, or a shorter --interval)"
    )


def summarize(key: str, runs: Sequence[Run], rules: Rules) -> Group:
    """One group's recommendation from its measured runs, beside the current requests and
    limits of the latest run that recorded them; refused when they hold too little."""
    refusal = too_little(runs)
    if refusal is not None:
        return Group(key, runs, None, refusal)
    figures = [run.figures for run in runs]
    counts: Counter[float] = Counter()
    for run in runs:
        counts.update(run.measured.cpu_counts if run.measured else {})
    current = ContainerResources()
    for run in runs:
        current = (run.summary.resources if run.summary else None) or current
    usage = Usage(
        cpu_basis=percentile(sorted(counts.items()), rules.cpu_percentile),
        memory_peak_mib=max(figure.memory_peak_mib for figure in figures),
        gpus_peak=max(figure.gpus_peak for figure in figures),
        runs=len(runs),
        rows=sum(figure.cpu_rows for figure in figures),
        hours=sum(figure.hours for figure in figures),
        oom_runs=sum(1 for run in runs if run.oom_killed),
    )
    return Group(key, runs, recommend(usage, rules, current))
