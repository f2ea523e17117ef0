"""`report --html`: the runs as one self-contained page — charts drawn by matplotlib (the
`report` extra) as inline SVG, the recommendation and the run's identity; no script, no CDN,
nothing fetched when it opens."""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from typing import Any

from sentinel_sidecar.recommend import Recommendation, Rules, cpu_cores, memory_mib
from sentinel_sidecar.report import Run, as_table, as_yaml

POINTS = 1500  # per series: a week of 1 s rows is drawn from bucket maxima, not 600 000 points


def _thinned(
    times: Sequence[float], values: Sequence[float | None]
) -> tuple[list[float], list[float]]:
    """At most POINTS points: the maximum of each bucket (peaks stay visible)."""
    pairs = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    step = max(1, math.ceil(len(pairs) / POINTS))
    xs, ys = [], []
    for start in range(0, len(pairs), step):
        bucket = pairs[start : start + step]
        xs.append(bucket[0][0])
        ys.append(max(value for _t, value in bucket))
    return xs, ys


def _chart(title: str, unit: str, runs: Sequence[Run], series: Sequence[tuple[str, str]],
           lines: Sequence[tuple[str, float, str]] = ()) -> str:  # fmt: skip
    """One chart as inline SVG; each series' group carries `id="series-<column>-<run>"`."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 2.6))
    axes = figure.add_subplot()
    for number, run in enumerate(runs, start=1):
        stamps = run.columns["timestamp"]
        start = next((stamp for stamp in stamps if stamp is not None), 0.0)
        minutes = [((stamp or start) - start) / 60 for stamp in stamps]
        for column, label in series:
            xs, ys = _thinned(minutes, run.columns[column])
            name = label if len(runs) == 1 else f"{label}, run {number}"
            (line,) = axes.plot(xs, ys, linewidth=1.0, label=name)
            line.set_gid(f"series-{column}-{number}")
    for label, value, style in lines:
        guide = axes.axhline(value, linestyle=style, linewidth=1.2, color="#444", label=label)
        guide.set_gid(f"line-{label.replace(' ', '-')}")
    axes.set_title(title, loc="left", fontsize=10)
    axes.set_xlabel("minutes since the run started", fontsize=8)
    axes.set_ylabel(unit, fontsize=8)
    axes.tick_params(labelsize=8)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]


def page(runs: Sequence[Run], recommendation: Recommendation, table: str) -> str:
    """The whole page."""
    current = recommendation.current
    cpu_lines = [("recommended request", cpu_cores(recommendation.cpu_request), "--")]
    memory_lines = [("recommended request = limit", memory_mib(recommendation.memory), "--")]
    if (current.get("requests") or {}).get("cpu"):
        cpu_lines.append(("current request", cpu_cores(current["requests"]["cpu"]), ":"))
    if (current.get("requests") or {}).get("memory"):
        memory_lines.append(("current request", memory_mib(current["requests"]["memory"]), ":"))
    charts = [
        _chart("CPU", "cores", runs, [("process_cpu_usage", "workload")], cpu_lines),
        _chart("Memory", "MiB", runs, [("process_memory_mib", "workload")], memory_lines),
        _chart("Disk", "bytes per interval", runs,
               [("process_disk_read_bytes", "read"), ("process_disk_write_bytes", "written")]),
        _chart("Network (node)", "bytes per interval", runs,
               [("system_net_recv_bytes", "received"), ("system_net_sent_bytes", "sent")]),
    ]  # fmt: skip
    if any(run.values("process_gpu_usage") and max(run.values("process_gpu_usage")) > 0
           for run in runs):  # fmt: skip
        charts.append(_chart("GPU", "GPUs", runs, [("process_gpu_usage", "workload")]))
    identity: dict[str, Any] = next(
        (run.summary["identity"] for run in reversed(runs) if run.summary.get("identity")), {}
    )
    rows = "".join(
        f"<tr><th>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in identity.items()
    )
    sources = ", ".join(html.escape(run.source) for run in runs)
    sections = "".join(f'<section class="chart">{chart}</section>' for chart in charts)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sentinel-sidecar report</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 24px auto; max-width: 960px; color: #222; }}
pre {{ background: #f5f5f5; padding: 12px; overflow-x: auto; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 2px 12px 2px 0; }}
.chart svg {{ width: 100%; height: auto; }}
</style></head><body>
<h1>What the workload used</h1>
<p>{sources}</p>
<h2>Recommendation</h2>
<pre>{html.escape(table)}</pre>
<pre>{html.escape(as_yaml(recommendation))}</pre>
{sections}
<h2>Where it ran</h2>
<table>{rows or "<tr><td>no run.json with an identity</td></tr>"}</table>
</body></html>
"""


def render(runs: Sequence[Run], recommendation: Recommendation, rules: Rules) -> str:
    """The page for `report --html`."""
    return page(runs, recommendation, as_table(runs, recommendation, rules))
