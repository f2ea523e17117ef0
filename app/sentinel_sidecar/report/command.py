"""`sentinel-sidecar report`: its flags, their checks, and the output in the chosen format."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sentinel_sidecar.config import EXIT_USAGE, ConfigError, PodEnv
from sentinel_sidecar.delivery.retry import READ_TIMEOUT
from sentinel_sidecar.identity.record import cpu_cores, memory_mib

EXIT_TOO_LITTLE = 3  # too few samples of the workload to recommend from


def add_parser(commands: Any) -> None:
    """The `report` subcommand and its flags."""
    summary = commands.add_parser(
        "report",
        help="what runs used and the requests and limits to set",
        description="What runs used, read from an output directory, a spool directory or a "
        "direct-S3 run prefix (several: runs of one job), and the workload container's "
        "requests and limits (see README 'Right-sizing').",
    )
    summary.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="a run (output dir, spool dir, s3://bucket/prefix/<run>) or a "
                         "directory or S3 prefix holding many")  # fmt: skip
    summary.add_argument("--group-by", default="job", metavar="job|tag:NAME[,...]|run|all",
                         help="one recommendation per job (its job_name), per value of a tag, "
                         "the first of several a run has (job,tag:team), per run, or over all "
                         "runs; a run with none of them is a group of its own [job]")  # fmt: skip
    summary.add_argument("--since", metavar="TIME", help="only runs started at or after TIME "
                         "(ISO 8601, UTC unless it says otherwise)")  # fmt: skip
    summary.add_argument("--until", metavar="TIME", help="only runs started before TIME")
    summary.add_argument("--format", choices=("table", "json", "yaml", "csv"), default="table",
                         help="table, JSON, YAML (a resources: block per group) or CSV (a "
                         "line per group) [table]")  # fmt: skip
    summary.add_argument("--html", type=Path, metavar="FILE",
                         help="also write one self-contained HTML page: a section per group, "
                         "the most wasted core-hours first")  # fmt: skip
    summary.add_argument("--cpu-percentile", type=float, default=95.0,
                         help="CPU request: this percentile of process_cpu_usage [95]")  # fmt: skip
    summary.add_argument("--memory-margin", type=float, default=0.15,
                         help="memory request = limit: the peak x (1 + margin) [0.15]")  # fmt: skip
    summary.add_argument("--cpu-limit-factor", type=float, default=None,
                         help="CPU limit = request x factor [none: no CPU limit]")  # fmt: skip
    summary.add_argument("--oom-bump-ratio", type=float, default=1.2,
                         help="after an OOM kill: memory from the peak x this [1.2]")  # fmt: skip
    summary.add_argument("--oom-min-bump-mib", type=float, default=100.0,
                         help="... and at least the peak + this many MiB [100]")  # fmt: skip
    summary.add_argument("--min-cpu", default="10m",
                         help="floor of the CPU request, a Kubernetes quantity [10m]")  # fmt: skip
    summary.add_argument("--min-memory", default="16Mi",
                         help="floor of the memory, a Kubernetes quantity [16Mi]")  # fmt: skip
    summary.add_argument("--min-runs", type=int, default=3,
                         help="fewer runs than this: the result is flagged [3]")  # fmt: skip
    summary.add_argument("--price-core-hour", type=float, metavar="PRICE",
                         help="what a core-hour of requests costs: the difference in money "
                         "too")  # fmt: skip
    summary.add_argument("--price-gib-hour", type=float, metavar="PRICE",
                         help="what a GiB-hour of memory requests costs")  # fmt: skip
    summary.add_argument("--s3-timeout", type=float, default=READ_TIMEOUT, metavar="SECONDS",
                         help="how long one request to S3 may go unanswered before it is tried "
                         "again (three tries, then the report ends)")  # fmt: skip


def main(argv: Sequence[str], environ: dict[str, str]) -> int:
    """`sentinel-sidecar report` with these arguments (the demo's last step)."""
    parser = argparse.ArgumentParser(prog="sentinel-sidecar")
    add_parser(parser.add_subparsers())
    return report(parser.parse_args(["report", *argv]), environ)


def report(args: argparse.Namespace, environ: dict[str, str]) -> int:
    # Here, not at the top: `run` builds this parser too and must not load the report.
    from sentinel_sidecar.report import fleet, render, runs
    from sentinel_sidecar.report.engine import Engine

    rules, prices = _rules(args), _prices(args)
    if not (math.isfinite(args.s3_timeout) and args.s3_timeout >= 1):
        raise ConfigError(f"report --s3-timeout: {args.s3_timeout:g} is not a number of "
                          "seconds >= 1")  # fmt: skip
    access = runs.S3Access(
        # boto3's chain asks the instance metadata service last: only where there is one.
        instance_metadata=PodEnv.from_environ(environ).in_pod
        or environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "false",
        timeout=args.s3_timeout,
    )
    try:
        group_by = fleet.check_group_by(args.group_by)
    except ValueError:
        raise ConfigError(
            f"report --group-by: {args.group_by!r} is not run, all, or job and tag:NAME "
            "separated by commas"
        ) from None
    since, until = _time("--since", args.since), _time("--until", args.until)
    try:
        engine = Engine(access=access)
        loaded = [run for given in args.inputs
                  for run in fleet.runs_in(given, access=access)]  # fmt: skip
        found = fleet.within(loaded, since, until)  # by run.json: nothing read for the rest
        for run in found:
            run.measured = engine.measure(run, series=args.html is not None)
            for why in run.measured.troubles:
                print(f"sentinel-sidecar: report: {why}", file=sys.stderr)
        if found and all(not run.figures.rows for run in found):
            raise runs.ReportError(f"no row could be read from {len(found)} run(s)")
        found = fleet.within(found, since, until)  # runs without run.json: by their first row
        if not found:
            raise runs.ReportError(f"none of the {len(loaded)} run(s) started in the time asked")
        groups = [fleet.summarize(key, members, rules)
                  for key, members in fleet.grouped(found, group_by).items()]  # fmt: skip
        groups.sort(key=lambda group: group.wasted_core_hours, reverse=True)
        if len(groups) == 1 and groups[0].refused:
            print(f"sentinel-sidecar: report: {groups[0].refused}", file=sys.stderr)
            return EXIT_TOO_LITTLE
        if args.html is not None:
            _write_html(args.html, groups, rules, prices)
    except runs.ReportError as exc:
        print(f"sentinel-sidecar: report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        print(render.as_json(groups, prices))
    elif args.format == "yaml":
        print(render.as_yaml(groups), end="")
    elif args.format == "csv":
        print(render.as_csv(groups, prices), end="")
    else:
        print(render.as_table(groups, rules, prices))
    return 0 if any(group.recommendation for group in groups) else EXIT_TOO_LITTLE


def _rules(args: argparse.Namespace) -> Any:
    """The recommendation's rules from the flags; ConfigError naming a flag out of range."""
    from sentinel_sidecar.report.recommend import Rules

    if not 0 < args.cpu_percentile <= 100:
        raise ConfigError(f"report --cpu-percentile: {args.cpu_percentile:g} is not in (0, 100]")
    if not (math.isfinite(args.memory_margin) and args.memory_margin >= 0):
        raise ConfigError(f"report --memory-margin: {args.memory_margin:g} is not >= 0")
    if args.cpu_limit_factor is not None and not args.cpu_limit_factor >= 1:
        raise ConfigError(f"report --cpu-limit-factor: {args.cpu_limit_factor:g} is not >= 1")
    if not (math.isfinite(args.oom_bump_ratio) and args.oom_bump_ratio >= 1):
        raise ConfigError(f"report --oom-bump-ratio: {args.oom_bump_ratio:g} is not >= 1")
    if not (math.isfinite(args.oom_min_bump_mib) and args.oom_min_bump_mib >= 0):
        raise ConfigError(f"report --oom-min-bump-mib: {args.oom_min_bump_mib:g} is not >= 0")
    if args.min_runs < 1:
        raise ConfigError(f"report --min-runs: {args.min_runs} is not >= 1")
    return Rules(
        args.cpu_percentile,
        args.memory_margin,
        args.cpu_limit_factor,
        oom_bump_ratio=args.oom_bump_ratio,
        oom_min_bump_mib=args.oom_min_bump_mib,
        min_cpu_cores=_quantity(cpu_cores, "--min-cpu", args.min_cpu),
        min_memory_mib=_quantity(memory_mib, "--min-memory", args.min_memory),
        min_runs=args.min_runs,
    )


def _prices(args: argparse.Namespace) -> Any:
    """`--price-core-hour` and `--price-gib-hour`; ConfigError naming one that is not >= 0."""
    from sentinel_sidecar.report.recommend import Prices

    for flag, value in (("--price-core-hour", args.price_core_hour),
                        ("--price-gib-hour", args.price_gib_hour)):  # fmt: skip
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"report {flag}: {value:g} is not a price >= 0")
    return Prices(args.price_core_hour, args.price_gib_hour)


def _time(flag: str, text: str | None) -> float | None:
    """A `--since`/`--until` value as UNIX time; ConfigError naming the flag when it is not
    ISO 8601 (a time without a zone is UTC)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"report {flag}: {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _quantity(parse: Callable[[str], float], flag: str, text: str) -> float:
    """A Kubernetes quantity flag's value; ConfigError naming the flag when it is not one."""
    try:
        value = parse(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"report {flag}: {text!r} is not a quantity (e.g. 250m, 512Mi)")
    return value


def _write_html(path: Path, groups: Any, rules: Any, prices: Any) -> None:
    from sentinel_sidecar.report import html, runs  # matplotlib only when a chart is drawn

    try:
        text = html.render(groups, rules, prices)
    except ImportError as exc:
        raise runs.ReportError(
            "--html needs matplotlib: pip install 'sentinel-sidecar[report]' (in a checkout: "
            f"pip install -e '.[report]') ({exc})"
        ) from exc
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise runs.ReportError(f"--html {path}: cannot be written ({exc.strerror})") from exc
    print(f"sentinel-sidecar: report: wrote {path} ({len(text) // 1024} KiB)", file=sys.stderr)
