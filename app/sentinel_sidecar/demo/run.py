"""`sentinel-sidecar demo`: the agent in local mode on a small built-in workload for ~15 s,
then the report of what it used. No token, no cloud."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from sentinel_sidecar import config, signals
from sentinel_sidecar.config import ConfigError
from sentinel_sidecar.delivery.local import output_dir
from sentinel_sidecar.start import configure_log, execute, launch


def add_parser(commands: Any) -> None:
    """The `demo` subcommand's flags: every setting, plus its own."""
    demo = commands.add_parser("demo", help="track a small built-in workload for ~15 s")
    config.add_flags(demo)
    demo.add_argument("--seconds", type=float, default=15.0, help="workload duration")
    demo.add_argument(
        "--dir", type=Path, help="where spool and output go (default: a new temp dir)"
    )


def demo(args: argparse.Namespace, environ: dict[str, str], stop: signals.StopFlag) -> int:
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ConfigError(f"demo --seconds: {args.seconds:g} is not allowed; expected > 0")
    import tempfile  # here: `run` builds the demo's flags too, and needs no tempfile

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
    context = configure_log(settings, args, environ)
    workload = [sys.executable, "-m", "sentinel_sidecar.demo.workload",
                "--seconds", str(args.seconds), "--dir", str(base)]  # fmt: skip
    command, settings = launch(workload, settings, stop)
    print(f"demo: tracking workload pid {command.pid} for ~{args.seconds:.0f} s ...", flush=True)
    try:
        outcome = execute(settings, stop, context, command)
    finally:
        command.abort()
    if outcome.summary is None:
        return 0  # stopped before the spool could be opened: said in the log
    output = output_dir(settings)
    print(f"\nchunks: {output}/NNNNNN.csv.gz   summary: {outcome.summary_uri}")
    print(f"spool:  {settings.spool_dir}/segment-*.csv\n")
    from sentinel_sidecar.report import command as report

    report.main([str(output)], environ)
    print(f"\nthe page: sentinel-sidecar report {output} --html report.html")
    return 0
