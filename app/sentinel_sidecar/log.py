"""structlog set-up: JSON lines on stderr, or a console renderer for humans; secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "<redacted>"
MIN_SECRET = 6  # shorter values would redact ordinary words and numbers
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
    """Fields every log line carries once bound, whichever thread writes it (structlog's
    contextvars are per thread, so a run_id bound in the upload thread never reached the main
    thread's lines), and the secret values no line may carry, whatever their key."""

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}
        self._secrets: tuple[str, ...] = ()

    def bind(self, **fields: Any) -> None:
        # Replaced, never mutated: the processor may read it from another thread at any time.
        self._fields = {**self._fields, **fields}

    def secret(self, *values: str | None) -> None:
        """Redact these values from every later line (tokens, keys, session tokens)."""
        added = {value for value in values if value and len(value) >= MIN_SECRET}
        self._secrets = tuple(sorted(set(self._secrets) | added, key=len, reverse=True))

    def __call__(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in self._fields.items():
            event_dict.setdefault(key, value)
        return event_dict

    def redact_values(
        self, _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Replace every known secret value inside any string of the line (error texts and
        tracebacks included)."""
        if self._secrets:
            for key, value in event_dict.items():
                event_dict[key] = self._scrub(value)
        return event_dict

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {key: self._scrub(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(item) for item in value]
        if isinstance(value, BaseException):
            return self._scrub(str(value))
        return value


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
            context.redact_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    return context
