"""`report`'s text outputs for one group or many: the terminal table, JSON, YAML (a
`resources:` block per group) and CSV (a line per group)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from sentinel_sidecar.identity.record import ContainerResources, amount
from sentinel_sidecar.report.fleet import Group
from sentinel_sidecar.report.recommend import Prices, Recommendation, Rules
from sentinel_sidecar.report.runs import Run

CSV_COLUMNS = (
    "group", "runs", "oom_killed_runs", "rows", "hours", "cpu_percentile_cores",
    "memory_peak_mib", "gpus", "cpu_request_current", "cpu_request_recommended",
    "memory_request_current", "memory_recommended", "core_hours_difference",
    "gib_hours_difference", "money_difference", "flags", "refused",
)  # fmt: skip


def as_dict(group: Group, prices: Prices) -> dict[str, Any]:
    """One group for `--format json`: the recommendation, its basis, the current values, the
    difference and the runs; or why there is none."""
    runs = [_run(run) for run in group.runs]
    rec = group.recommendation
    if rec is None:
        return {"refused": group.refused, "flags": list(group.flags), "runs": runs}
    return {
        "resources": rec.resources(),
        "basis": {
            "cpu_percentile_cores": round(rec.cpu_basis, 4),
            "memory_peak_mib": round(rec.memory_peak_mib, 1),
            "runs": rec.runs,
            "oom_killed_runs": rec.oom_runs,
            "rows": rec.rows,
            "hours": round(rec.hours, 3),
        },
        "flags": list(group.flags),
        "current": dict(rec.current),
        "difference": rec.savings(prices),
        "runs": runs,
    }


def _run(run: Run) -> dict[str, Any]:
    """One run in JSON: where, its id, how it ended, and what it used."""
    figures = run.figures
    return {
        "source": run.source,
        "run_id": run.summary.run_id if run.summary else None,
        "oom_killed": run.oom_killed,
        "rows": figures.rows,
        "hours": round(figures.hours, 3),
        "memory_peak_mib": round(figures.memory_peak_mib, 1),
        "core_hours_used": round(figures.core_hours, 3),
        "gib_hours_used": round(figures.gib_hours, 3),
        "chunks_left_out_or_read_in_part": list(run.measured.troubles) if run.measured else [],
    }


def as_json(groups: Sequence[Group], prices: Prices) -> str:
    """One group: its object; several: `{"groups": [...]}`, each with its key."""
    if len(groups) == 1:
        return json.dumps(as_dict(groups[0], prices), indent=2)
    return json.dumps(
        {"groups": [{"group": group.key, **as_dict(group, prices)} for group in groups]},
        indent=2,
    )


def as_yaml(groups: Sequence[Group]) -> str:
    """The `resources:` block, ready to paste into a container spec; with several groups, one
    per group under its key (a group with too little data has none)."""
    import yaml

    blocks = {group.key: group.recommendation.resources() for group in groups
              if group.recommendation}  # fmt: skip
    if len(groups) == 1:
        blocks = {"resources": next(iter(blocks.values()))} if blocks else {}
    return str(yaml.safe_dump(blocks, sort_keys=False))


def as_csv(groups: Sequence[Group], prices: Prices) -> str:
    """A line per group (CSV_COLUMNS): what a spreadsheet or a fleet dashboard takes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in groups:
        rec = group.recommendation
        if rec is None:
            writer.writerow([group.key, len(group.runs), *[""] * 13, "; ".join(group.flags),
                             group.refused])  # fmt: skip
            continue
        difference = rec.savings(prices) or {}
        writer.writerow([
            group.key, rec.runs, rec.oom_runs, rec.rows, round(rec.hours, 3),
            round(rec.cpu_basis, 4), round(rec.memory_peak_mib, 1), rec.gpus,
            amount(rec.current, "requests", "cpu"), rec.cpu_request,
            amount(rec.current, "requests", "memory"), rec.memory,
            difference.get("core_hours", ""), difference.get("gib_hours", ""),
            difference.get("money", ""), "; ".join(group.flags), "",
        ])  # fmt: skip
    return buffer.getvalue()


def as_table(groups: Sequence[Group], rules: Rules, prices: Prices) -> str:
    """The terminal table: one group as a block; several as a line each (the fleet), then
    a block per group."""
    blocks = [
        _block(group.recommendation, group.flags, rules, prices)
        if group.recommendation else group.refused or ""
        for group in groups
    ]  # fmt: skip
    if len(groups) == 1:
        return blocks[0]
    fleet = _fleet(groups, prices)
    details = [f"== {group.key} ==\n{block}" for group, block in zip(groups, blocks, strict=True)]
    return "\n\n".join([fleet, *details])


def fleet_head(prices: Prices) -> list[str]:
    """The columns of the fleet's line per group (the table's and the HTML page's)."""
    head = ["runs", "hours", "cpu p", "peak MiB", "cpu request", "memory", "core-h", "GiB-h"]
    return [*head, "money"] if prices.given else head


def fleet_cells(rec: Recommendation, prices: Prices) -> list[str]:
    """A group's line of the fleet under `fleet_head`: runs, hours, the basis, current ->
    recommended, the difference (current requests minus recommended over the runs' hours)."""
    difference = rec.savings(prices) or {}
    cells = [str(rec.runs), f"{rec.hours:.1f}", f"{rec.cpu_basis:.2f}",
             f"{rec.memory_peak_mib:.0f}",
             f"{amount(rec.current, 'requests', 'cpu')} -> {rec.cpu_request}",
             f"{amount(rec.current, 'requests', 'memory')} -> {rec.memory}",
             _signed(difference.get("core_hours")),
             _signed(difference.get("gib_hours"))]  # fmt: skip
    return [*cells, _signed(difference.get("money"))] if prices.given else cells


_WIDTHS = (4, 9, 8, 10, 20, 20, 10, 10, 10)  # of the fleet's columns in the terminal


def _fleet(groups: Sequence[Group], prices: Prices) -> str:
    """A line per group (`fleet_cells`), the group's name last: long names keep the columns."""

    def line(cells: Sequence[str]) -> str:
        return "".join(f"{cell:>{width}}" for cell, width in zip(cells, _WIDTHS, strict=False))

    lines = [line(fleet_head(prices)) + "  group"]
    for group in groups:
        rec = group.recommendation
        if rec is None:
            lines.append(f"{len(group.runs):>4}  too little to recommend from  {group.key}")
            continue
        lines.append(f"{line(fleet_cells(rec, prices))}  {group.key}"
                     + (" *" if group.flags else ""))  # fmt: skip
    lines.append("core-h, GiB-h: current requests minus recommended over the runs' hours, the "
                 "most first; * flagged (below)")  # fmt: skip
    return "\n".join(lines)


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def _block(rec: Recommendation, flags: Sequence[str], rules: Rules, prices: Prices) -> str:
    """One group: what to set, what it rests on, and the current values beside."""
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
    if flags:
        lines += ["", *(f"flag: {flag}" for flag in flags)]
    savings = rec.savings(prices)
    if savings:
        units = {"core_hours": "core-hours", "gib_hours": "GiB-hours", "money": "in money"}
        parts = [f"{value:+.2f} {units[unit]}" for unit, value in savings.items()]
        lines += ["", "current requests minus recommended, over these runs: " + ", ".join(parts)]
    return "\n".join(lines)


def _line(
    name: str, value: str, current: ContainerResources, kind: str, key: str, basis: str
) -> str:
    now = amount(current, kind, key)
    return f"{name:18}{value:>14}{now:>12}  {basis}"
