"""structlog set-up: JSON lines on stderr, or a console renderer for humans; secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "<redacted>"
_SECRET_MARKERS = ("token", "secret", "password", "credential", "access_key", "authorization")


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(marker in lowered for marker in _SECRET_MARKERS)


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: REDACTED if _is_secret(str(k)) else _redact(v) for k, v in value.items()}
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Replace the value of every key that names a secret, also inside nested dicts."""
    for key, value in event_dict.items():
        if key != "event":
            event_dict[key] = REDACTED if _is_secret(key) else _redact(value)
    return event_dict


class RunContext:
    """Fields every log line carries once bound, whichever thread writes it: structlog's
    contextvars are per thread, so a run_id bound in the upload thread never reached the main
    thread's lines (run_finished had none)."""

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}

    def bind(self, **fields: Any) -> None:
        # Replaced, never mutated: the processor may read it from another thread at any time.
        self._fields = {**self._fields, **fields}

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in self._fields.items():
            event_dict.setdefault(key, value)
        return event_dict


def configure(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> RunContext:
    """Configure structlog for the whole process; call once at start-up. Returns the context
    whose bound fields go into every line."""
    context = RunContext()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            context,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    return context
