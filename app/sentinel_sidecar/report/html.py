"""`report --html`: the runs as one self-contained page a team would look at — which job, when,
how long, how it ended; the recommendation as a table and as a `resources:` block to copy; the
totals; charts of the workload's own figures in human units (drawn by matplotlib, the `report`
extra, as inline SVG) with the legends beside the data; where it ran. No script, no CDN,
nothing fetched when it opens."""

from __future__ import annotations

import html
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sentinel_sidecar.identity.record import amount, cpu_cores, memory_mib
from sentinel_sidecar.report.figures import Series
from sentinel_sidecar.report.fleet import Group
from sentinel_sidecar.report.recommend import Prices, Recommendation, Rules
from sentinel_sidecar.report.render import as_yaml, fleet_cells, fleet_head
from sentinel_sidecar.report.runs import Run


@dataclass(frozen=True)
class Totals:
    """What the runs used in all."""

    core_hours: float
    gib_hours: float
    read_bytes: float
    written_bytes: float
    gpu_hours: float


def totals(runs: Sequence[Run]) -> Totals:
    """Core-hours, GiB-hours, bytes read and written and GPU-hours over every row."""
    figures = [run.figures for run in runs]
    return Totals(sum(f.core_hours for f in figures), sum(f.gib_hours for f in figures),
                  sum(f.read_bytes for f in figures), sum(f.written_bytes for f in figures),
                  sum(f.gpu_hours for f in figures))  # fmt: skip


def _chart(
    title: str,
    unit: str,
    runs: Sequence[Run],
    series: Sequence[tuple[str, str, Callable[[Series], list[float | None]]]],
    lines: Sequence[tuple[str, float, str]] = (),
) -> str:
    """One chart as inline SVG; `series` are (column, label, values of a run's series); each
    line's group carries `id="series-<column>-<run>"`. The legend sits right of the axes."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.6, 2.6))
    axes = figure.add_subplot()
    for number, run in enumerate(runs, start=1):
        drawn = run.measured.series if run.measured else None
        if drawn is None:
            continue
        for column, label, values in series:
            pairs = [(x, y) for x, y in zip(drawn.minutes, values(drawn), strict=True)
                     if y is not None]  # fmt: skip
            name = label if len(runs) == 1 else f"{label}, run {number}"
            (line,) = axes.plot([x for x, _ in pairs], [y for _, y in pairs], linewidth=1.0,
                                label=name)  # fmt: skip
            line.set_gid(f"series-{column}-{number}")
    for label, value, style in lines:
        guide = axes.axhline(value, linestyle=style, linewidth=1.2, color="#444", label=label)
        guide.set_gid(f"line-{label.replace(' ', '-')}")
    axes.set_title(title, loc="left", fontsize=10)
    axes.set_xlabel("minutes since the run started", fontsize=8)
    axes.set_ylabel(unit, fontsize=8)
    axes.set_ylim(bottom=0)
    axes.tick_params(labelsize=8)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.subplots_adjust(left=0.07, right=0.78, bottom=0.2, top=0.88)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def _charts(runs: Sequence[Run], recommendation: Recommendation) -> list[str]:
    current = recommendation.current
    cpu_lines = [("recommended request", cpu_cores(recommendation.cpu_request), "--")]
    memory_lines = [("recommended request = limit", memory_mib(recommendation.memory), "--")]
    if (current.get("requests") or {}).get("cpu"):
        cpu_lines.append(("current request", cpu_cores(current["requests"]["cpu"]), ":"))
    if (current.get("requests") or {}).get("memory"):
        memory_lines.append(("current request", memory_mib(current["requests"]["memory"]), ":"))
    charts = [
        _chart("CPU", "cores", runs,
               [("process_cpu_usage", "workload", lambda s: s.cpu)], cpu_lines),
        _chart("Memory (PSS)", "MiB", runs,
               [("process_memory_mib", "workload", lambda s: s.memory)], memory_lines),
        _chart("Disk", "MB/s", runs, [
            ("process_disk_read_bytes", "read", lambda s: s.read),
            ("process_disk_write_bytes", "written", lambda s: s.written),
        ]),
    ]  # fmt: skip
    if any(run.figures.gpu_usage_peak > 0 for run in runs):
        charts.append(_chart("GPU", "GPUs busy", runs,
                             [("process_gpu_usage", "workload", lambda s: s.gpu)]))  # fmt: skip
    return charts


def _identity(run: Run) -> dict[str, tuple[str, str]]:
    """(value, source) per field of a run.json identity; older files wrote `value (source)`."""
    fields: dict[str, tuple[str, str]] = {}
    for name, entry in (run.summary.identity if run.summary else {}).items():
        if isinstance(entry, dict):
            fields[name] = (str(entry.get("value")), str(entry.get("source", "")))
        else:
            value, _, source = str(entry).rpartition(" (")
            fields[name] = (value, source.rstrip(")")) if value else (str(entry), "")
    return fields


def _started(run: Run) -> str | None:
    return run.summary.started_at if run.summary else None


def _when(text: Any) -> str:
    try:
        moment = datetime.fromisoformat(str(text)).astimezone(UTC)
    except ValueError:
        return "-"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _run_seconds(run: Run) -> float:
    """How long the run was sampled: the seconds its rows cover."""
    return run.figures.seconds


def _ended(run: Run) -> str:
    code = run.summary.exit_code if run.summary else None
    if code is None:
        return "exit code unknown"
    return f"exit {code} ({'failed' if code else 'finished'})"


def _bytes(count: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{html.escape(cell)}</th>" for cell in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _recommendation_rows(rec: Recommendation, rules: Rules) -> list[list[str]]:
    current = rec.current

    def now(kind: str, key: str) -> str:
        return amount(current, kind, key)

    rows = [
        ["cpu request", rec.cpu_request, now("requests", "cpu"),
         f"p{rules.cpu_percentile:g} of the workload's CPU: {rec.cpu_basis:.3f} cores"],
        ["cpu limit", rec.cpu_limit or "none", now("limits", "cpu"),
         "none: a CPU limit throttles a job that could use idle cores"
         if rec.cpu_limit is None else f"request x {rules.cpu_limit_factor:g}"],
        ["memory request", rec.memory, now("requests", "memory"),
         f"peak {rec.memory_peak_mib:.0f} MiB"
         + (" raised for OOM kills" if rec.oom_runs else "") + f" + {rules.memory_margin:.0%}"],
        ["memory limit", rec.memory, now("limits", "memory"),
         "= request: a pod over its request is evicted first"],
    ]  # fmt: skip
    if rec.gpus:
        rows.append(["nvidia.com/gpu", str(rec.gpus), now("limits", "nvidia.com/gpu"),
                     "GPUs the workload kept busy at once"])  # fmt: skip
    return rows


def render(groups: Sequence[Group], rules: Rules, prices: Prices) -> str:
    """The page for `report --html`: one group's page, or a fleet page — a line per group,
    then a section per group, in the order given (the most wasted core-hours first)."""
    if len(groups) == 1:
        group = groups[0]
        latest = _identity(group.runs[-1])
        job = latest.get("job_name", ("", ""))[0] or latest.get("project_name", ("", ""))[0]
        title = f"{job}: what it used" if job else "What the workload used"
        return _page(title, _section(group, rules, prices, title, 1))
    head = ["group", *fleet_head(prices)]
    lines = [
        [group.key, *fleet_cells(group.recommendation, prices)] if group.recommendation
        else [group.key, str(len(group.runs)), "too little to recommend from",
              *["-"] * (len(head) - 3)]
        for group in groups
    ]  # fmt: skip
    title = f"{len(groups)} jobs: what they used"
    sections = "".join(_section(group, rules, prices, group.key, 2) for group in groups)
    body = (f"<header><h1>{html.escape(title)}</h1></header>\n"
            "<p class=\"note\">Current requests minus recommended over the runs' hours, the "
            f"most wasted core-hours first.</p>\n{_table(head, lines)}{sections}")  # fmt: skip
    return _page(title, body)


def _page(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px auto; max-width: 980px; color: #222; }}
header p {{ color: #444; }} header span {{ margin-right: 4px; }}
pre {{ background: #f5f5f5; padding: 12px; overflow-x: auto; user-select: all; }}
table {{ border-collapse: collapse; margin: 8px 0; }}
th, td {{ text-align: left; padding: 3px 14px 3px 0; border-bottom: 1px solid #eee; }}
.totals td:first-child {{ color: #555; }}
.chart svg {{ width: 100%; height: auto; }}
.note {{ color: #666; font-size: 12px; }}
.flag {{ color: #8a5300; }}
section.group {{ border-top: 2px solid #ddd; margin-top: 32px; }}
</style></head><body>
{body}
</body></html>
"""


def _section(group: Group, rules: Rules, prices: Prices, title: str, level: int) -> str:
    """One group: its facts, the recommendation, the totals, the charts, the runs, where the
    latest ran. `level` 1: the page's own heading; 2: a section of a fleet page."""
    runs = group.runs
    latest = _identity(runs[-1])
    facts = [
        ("project", latest.get("project_name", ("", ""))[0]),
        ("job", latest.get("job_name", ("", ""))[0]),
        ("started", _when(_started(runs[0]))),
        ("duration", _duration(sum(_run_seconds(run) for run in runs))),
        ("ended", _ended(runs[-1]) if len(runs) == 1 else f"{len(runs)} runs"),
    ]
    header = " · ".join(
        f"<span><b>{html.escape(name)}</b> {html.escape(value)}</span>"
        for name, value in facts
        if value not in ("", "-")
    )
    h1, h2 = f"h{level}", f"h{level + 1}"
    top = f"<header><{h1}>{html.escape(title)}</{h1}><p>{header}</p></header>"
    run_rows = [[str(number), _when(_started(run)), _duration(_run_seconds(run)),
                 _ended(run), str(run.figures.rows), run.source]
                for number, run in enumerate(runs, start=1)]  # fmt: skip
    flags = "".join(f'<p class="flag">{html.escape(flag)}</p>' for flag in group.flags)
    runs_table = f"<{h2}>Runs</{h2}>\n" + _table(
        ["#", "started", "duration", "ended", "rows", "source"], run_rows
    )
    rec = group.recommendation
    if rec is None:
        refused = f'<p class="flag">{html.escape(group.refused or "")}</p>'
        return f'<section class="group">{top}\n{refused}{flags}\n{runs_table}</section>'
    total = totals(runs)
    sums = [("CPU", f"{total.core_hours:.3g} core-hours"),
            ("memory", f"{total.gib_hours:.3g} GiB-hours"),
            ("disk read", _bytes(total.read_bytes)),
            ("disk written", _bytes(total.written_bytes))]  # fmt: skip
    if total.gpu_hours:
        sums.append(("GPU", f"{total.gpu_hours:.3g} GPU-hours"))
    difference = rec.savings(prices) or {}
    if difference:
        units = {"core_hours": "core-hours", "gib_hours": "GiB-hours", "money": "in money"}
        parts = [f"{value:+.2f} {units[unit]}" for unit, value in difference.items()]
        sums.append(("current requests minus recommended", ", ".join(parts)))
    where = [[name, value, source] for name, (value, source) in sorted(latest.items())]
    charts = "".join(f'<section class="chart">{chart}</section>' for chart in _charts(runs, rec))
    in_all = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in sums
    )
    recommendation = _table(["resource", "recommended", "current", "basis"],
                            _recommendation_rows(rec, rules))  # fmt: skip
    place = (
        _table(["field", "value", "source"], where)
        if where
        else ("<p>no run.json with an identity</p>")
    )
    return f"""<section class="group">{top}
<{h2}>Recommendation</{h2}>
{recommendation}
{flags}
<p class="note">For the workload container; copy into its spec:</p>
<pre>{html.escape(as_yaml([group]))}</pre>
<{h2}>In all</{h2}>
<table class="totals"><tbody>{in_all}</tbody></table>
<{h2}>Over time</{h2}>
<p class="note">The workload's own processes (the agent and node-wide figures left out).</p>
{charts}
{runs_table}
<{h2}>Where it ran</{h2}>
{place}
</section>"""
