"""Command line: `sentinel-sidecar run | demo | report`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Only light modules here: the stop handlers are installed before the heavy imports (structlog,
# boto3, requests), so a SIGTERM during start-up drains like any other.
from sentinel_sidecar import __version__, config, signals
from sentinel_sidecar.config import ConfigError, Settings

if TYPE_CHECKING:
    from sentinel_sidecar.launch import Command
    from sentinel_sidecar.log import RunContext
    from sentinel_sidecar.runner import RunOutcome

EXIT_USAGE = 2
EXIT_TOO_LITTLE = 3  # `report`: too few samples of the workload to recommend from
COMMAND_EXIT_WAIT = 10.0  # s for `run -- CMD` to be reaped after the run ended


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sentinel-sidecar",
        description="Record what a workload uses; deliver it to Sentinel, S3 or a directory.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="action", required=True)
    run = commands.add_parser(
        "run",
        help="track the pod's workload until SIGTERM or its exit; or start CMD and track it",
        usage="%(prog)s [FLAGS] [-- CMD [ARG ...]]",
        description="Without CMD: track the pod's workload (or --pid, --cgroup) until SIGTERM "
        "or its exit. With `-- CMD ARG...`: start CMD, track it from its first instruction, "
        "pass stop signals on to it and exit with its exit code.",
    )
    config.add_flags(run)
    demo = commands.add_parser("demo", help="track a small built-in workload for ~15 s")
    config.add_flags(demo)
    demo.add_argument("--seconds", type=float, default=15.0, help="workload duration")
    demo.add_argument(
        "--dir", type=Path, help="where spool and output go (default: a new temp dir)"
    )
    summary = commands.add_parser(
        "report",
        help="what runs used and the requests and limits to set",
        description="What runs used, read from an output directory, a spool directory or a "
        "direct-S3 run prefix (several: runs of one job), and the workload container's "
        "requests and limits (see README 'Right-sizing').",
    )
    summary.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="output dir, spool dir or s3://bucket/prefix/<run>")  # fmt: skip
    summary.add_argument("--format", choices=("table", "json", "yaml"), default="table")
    summary.add_argument("--html", type=Path, metavar="FILE",
                         help="also write one self-contained HTML page of the run")  # fmt: skip
    summary.add_argument("--cpu-percentile", type=float, default=95.0,
                         help="CPU request: this percentile of process_cpu_usage [95]")  # fmt: skip
    summary.add_argument("--memory-margin", type=float, default=0.15,
                         help="memory request = limit: the peak x (1 + margin) [0.15]")  # fmt: skip
    summary.add_argument("--cpu-limit-factor", type=float, default=None,
                         help="CPU limit = request x factor [none: no CPU limit]")  # fmt: skip
    return parser


def _execute(
    settings: Settings,
    stop: signals.StopFlag,
    context: RunContext,
    environ: dict[str, str],
    command: Command | None = None,
) -> RunOutcome:
    from sentinel_sidecar.runner import Runner

    return Runner(
        settings, stop, context=context, in_pod=config.in_pod(environ), command=command
    ).run()


def _launch(
    argv: Sequence[str], settings: Settings, stop: signals.StopFlag
) -> tuple[Command, Settings]:
    """Start CMD held at its gate; the settings then track its pid. Stop signals go to it."""
    from sentinel_sidecar.launch import Command

    command = Command(argv)
    command.forward_signals(stop)
    started = dataclasses.replace(
        settings, pid=command.pid, command=settings.command or json.dumps(list(argv))
    )
    return command, started


def _run_command(
    settings: Settings, stop: signals.StopFlag, context: RunContext, environ: dict[str, str],
    argv: Sequence[str],
) -> int:  # fmt: skip
    """`run -- CMD`: the agent's exit code is the command's."""
    command, settings = _launch(argv, settings, stop)
    try:
        _execute(settings, stop, context, environ, command)
    finally:
        command.abort()
    code = command.exit_code(COMMAND_EXIT_WAIT)
    return 0 if code is None else code


def _demo(args: argparse.Namespace, environ: dict[str, str], stop: signals.StopFlag) -> int:
    from sentinel_sidecar.report import runs as report

    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ConfigError(f"demo --seconds: {args.seconds:g} is not allowed; expected > 0")
    base: Path = args.dir or Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
    try:
        (base / "spool").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"demo --dir {base}: cannot be used ({exc.strerror})") from exc
    defaults: dict[str, Any] = {
        "spool_dir": base / "spool",
        "output_dir": base / "output",
        "upload_interval": 5.0,
        "log_format": "console",
        "health_port": 0,
        "cloud_detect": False,  # a demo on a laptop asks no cloud's metadata service
        "job_name": "sentinel-demo",
    }
    settings = config.load(args, environ, defaults)
    context = _configure_log(settings, args, environ)
    workload = [sys.executable, "-m", "sentinel_sidecar.demo.workload",
                "--seconds", str(args.seconds), "--dir", str(base)]  # fmt: skip
    command, settings = _launch(workload, settings, stop)
    print(f"demo: tracking workload pid {command.pid} for ~{args.seconds:.0f} s ...", flush=True)
    try:
        outcome = _execute(settings, stop, context, environ, command)
    finally:
        command.abort()
    if outcome.summary is None:
        return 0  # stopped before the spool could be opened: said in the log
    output = settings.local_output_dir
    print(f"\nchunks: {output}/NNNNNN.csv.gz   summary: {outcome.summary_uri}")
    print(f"spool:  {settings.spool_dir}/segment-*.csv\n")
    from sentinel_sidecar.report.recommend import Rules

    runs, recommendation = report.build([str(output)], Rules())
    print(report.too_little(runs) or report.as_table(runs, recommendation, Rules()))
    print(f"\nthe page (needs matplotlib): sentinel-sidecar report {output} --html report.html")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sentinel-sidecar` console script."""
    stop = signals.StopFlag()
    signals.install(stop)  # first, so an early SIGTERM still ends the run cleanly
    try:
        return _main(argv, stop)
    finally:
        signals.ignore()


def _split_command(argv: Sequence[str]) -> tuple[list[str], list[str] | None]:
    """The agent's own arguments, and CMD after the first `--` (None without one)."""
    argv = list(argv)
    if "--" not in argv:
        return argv, None
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1 :]


def _main(argv: Sequence[str] | None, stop: signals.StopFlag) -> int:
    own, command = _split_command(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(own)
    if command is not None and args.action != "run":
        parser.error(f"{args.action}: `-- CMD` is for `run` only")
    environ = dict(os.environ)
    try:
        if args.action == "report":
            return _report(args, environ)
        if args.action == "demo":
            return _demo(args, environ, stop)
        settings = config.load(args, environ)
        _check_target(settings, command)
    except ConfigError as exc:
        print(f"sentinel-sidecar: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    context = _configure_log(settings, args, environ)
    try:
        if command is not None:
            return _run_command(settings, stop, context, environ, command)
        _execute(settings, stop, context, environ)
    except ConfigError as exc:
        print(f"sentinel-sidecar: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _report(args: argparse.Namespace, environ: dict[str, str]) -> int:
    from sentinel_sidecar.report import runs as report
    from sentinel_sidecar.report.recommend import Rules

    if not 0 < args.cpu_percentile <= 100:
        raise ConfigError(f"report --cpu-percentile: {args.cpu_percentile:g} is not in (0, 100]")
    if not (math.isfinite(args.memory_margin) and args.memory_margin >= 0):
        raise ConfigError(f"report --memory-margin: {args.memory_margin:g} is not >= 0")
    if args.cpu_limit_factor is not None and not args.cpu_limit_factor >= 1:
        raise ConfigError(f"report --cpu-limit-factor: {args.cpu_limit_factor:g} is not >= 1")
    rules = Rules(args.cpu_percentile, args.memory_margin, args.cpu_limit_factor)
    # boto3's chain asks the instance metadata service last: only where there is one to ask.
    instance_metadata = config.in_pod(environ) or (
        environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "false"
    )
    try:
        runs, recommendation = report.build(args.inputs, rules, instance_metadata=instance_metadata)
        refusal = report.too_little(runs)
        if refusal is not None:
            print(f"sentinel-sidecar: report: {refusal}", file=sys.stderr)
            return EXIT_TOO_LITTLE
        if args.html is not None:
            _write_html(args.html, runs, recommendation, rules)
    except report.ReportError as exc:
        print(f"sentinel-sidecar: report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.format == "json":
        print(json.dumps(report.as_dict(runs, recommendation), indent=2))
    elif args.format == "yaml":
        print(report.as_yaml(recommendation), end="")
    else:
        print(report.as_table(runs, recommendation, rules))
    return 0


def _write_html(path: Path, runs: Any, recommendation: Any, rules: Any) -> None:
    from sentinel_sidecar.report import html  # matplotlib only when a chart is drawn
    from sentinel_sidecar.report import runs as report

    try:
        text = html.render(runs, recommendation, rules)
    except ImportError as exc:
        raise report.ReportError(
            "--html needs matplotlib: pip install matplotlib (in a checkout: "
            f"pip install -e '.[report]') ({exc})"
        ) from exc
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise report.ReportError(f"--html {path}: cannot be written ({exc.strerror})") from exc
    print(f"sentinel-sidecar: report: wrote {path} ({len(text) // 1024} KiB)", file=sys.stderr)


def _check_target(settings: Settings, command: Sequence[str] | None) -> None:
    """What to track must exist: ConfigError naming the setting, before anything starts."""
    if command is not None:
        from sentinel_sidecar import launch

        if settings.pid is not None or settings.cgroup is not None:
            raise ConfigError("run -- CMD: --pid and --cgroup name another workload; give neither")
        launch.check(command)
        return
    if settings.pid is not None and settings.cgroup is not None:
        raise ConfigError("pid and cgroup (--pid, --cgroup): give one of them, not both")
    if settings.pid is not None and not (settings.proc_root / str(settings.pid)).is_dir():
        raise ConfigError(
            f"pid (--pid, TRACKER_PID): no process {settings.pid} under {settings.proc_root} "
            "(if it was a short job, it ended already: `sentinel-sidecar run -- CMD` starts it "
            "and tracks it from its start)"
        )
    if settings.cgroup is not None:
        from sentinel_sidecar.measure.cgroup import CgroupReader

        if not CgroupReader(settings.cgroup_root).dirs_for_path(settings.cgroup).any():
            raise ConfigError(
                f"cgroup (--cgroup, TRACKER_CGROUP): no cgroup {settings.cgroup!r} under "
                f"{settings.cgroup_root}"
            )


def _configure_log(
    settings: Settings, args: argparse.Namespace, environ: dict[str, str]
) -> RunContext:
    """Logging as the settings say; then the settings in force and every unknown setting."""
    import structlog

    from sentinel_sidecar import log

    context = log.configure(settings.log_level, settings.log_format)
    context.secret(settings.sentinel_api_token)
    logger = structlog.get_logger(__name__)
    logger.info("settings", version=__version__, **settings.effective())
    config_path = getattr(args, "config", None) or environ.get(config.CONFIG_ENV)
    for warning in config.unknown_settings(environ, Path(config_path) if config_path else None):
        logger.warning("unknown_setting", message=warning)
    return context


if __name__ == "__main__":
    sys.exit(main())
