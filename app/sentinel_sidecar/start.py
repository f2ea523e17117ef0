"""What `run` and `demo` share: logging set up from the settings, a command started at its
gate (`run -- CMD`), one run of the agent."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sentinel_sidecar import __version__, signals

if TYPE_CHECKING:
    from sentinel_sidecar.config import Settings
    from sentinel_sidecar.launch import Command
    from sentinel_sidecar.log import RunContext
    from sentinel_sidecar.runner import RunOutcome


def execute(
    settings: Settings, stop: signals.StopFlag, context: RunContext, command: Command | None = None
) -> RunOutcome:
    """One run of the agent with these settings."""
    from sentinel_sidecar.runner import Runner

    return Runner(settings, stop, context=context, command=command).run()


def launch(
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


def configure_log(
    settings: Settings, args: argparse.Namespace, environ: dict[str, str]
) -> RunContext:
    """Logging as the settings say; then the settings in force and every unknown setting."""
    import structlog

    from sentinel_sidecar import config, log

    context = log.configure(settings.log_level, settings.log_format)
    context.secret(settings.sentinel_api_token)
    logger = structlog.get_logger(__name__)
    logger.info("settings", version=__version__, **settings.effective())
    config_path = getattr(args, "config", None) or environ.get(config.CONFIG_ENV)
    for warning in config.unknown_settings(environ, Path(config_path) if config_path else None):
        logger.warning("unknown_setting", message=warning)
    return context
