"""Command line: `sentinel-sidecar run | demo | report`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# Only light modules here: the stop handlers are installed before the heavy imports (config
# and what it composes, structlog, botocore, requests), so a SIGTERM during start-up drains like
# any other.
from sentinel_sidecar import __version__, deferred, signals, start

if TYPE_CHECKING:
    from sentinel_sidecar.config import Settings
    from sentinel_sidecar.log import RunContext

COMMAND_EXIT_WAIT = 10.0  # s for `run -- CMD` to be reaped after the run ended


def _parser() -> argparse.ArgumentParser:
    from sentinel_sidecar import config
    from sentinel_sidecar.demo import run as demo_run
    from sentinel_sidecar.inject import command as inject_command
    from sentinel_sidecar.report import command as report_command

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
    demo_run.add_parser(commands)
    report_command.add_parser(commands)
    inject_command.add_parser(commands)
    return parser


def _run_command(
    settings: Settings, stop: signals.StopFlag, context: RunContext, argv: Sequence[str]
) -> int:
    """`run -- CMD`: the agent's exit code is the command's."""
    command, settings = start.launch(argv, settings, stop)
    try:
        start.execute(settings, stop, context, command)
    finally:
        command.abort()
    code = command.exit_code(COMMAND_EXIT_WAIT)
    return 0 if code is None else code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sentinel-sidecar` console script."""
    stop = signals.StopFlag()
    signals.install(stop)  # first, so an early SIGTERM still ends the run cleanly
    deferred.defer_unused()  # before structlog: its asyncio (and ssl) only when used
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
    from sentinel_sidecar import config
    from sentinel_sidecar.config import EXIT_USAGE, ConfigError

    own, command = _split_command(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(own)
    if command is not None and args.action != "run":
        parser.error(f"{args.action}: `-- CMD` is for `run` only")
    environ = dict(os.environ)
    try:
        if args.action == "report":
            from sentinel_sidecar.report.command import report

            return report(args, environ)
        if args.action == "demo":
            from sentinel_sidecar.demo.run import demo

            return demo(args, environ, stop)
        if args.action == "inject":
            from sentinel_sidecar.inject.command import inject

            return inject(args, environ, stop)
        settings = config.load(args, environ)
        _check_target(settings, command)
    except ConfigError as exc:
        print(f"sentinel-sidecar: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    context = start.configure_log(settings, args, environ)
    try:
        if command is not None:
            return _run_command(settings, stop, context, command)
        start.execute(settings, stop, context)
    except ConfigError as exc:
        print(f"sentinel-sidecar: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _check_target(settings: Settings, command: Sequence[str] | None) -> None:
    """What to track must exist: ConfigError naming the setting, before anything starts."""
    from sentinel_sidecar.config import ConfigError

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


if __name__ == "__main__":
    sys.exit(main())
