"""How a setting is declared: `setting(default, rule, help)` on a field of a settings group (a
`settings_group` class with a `TITLE`), and the rules that check a value from YAML, the environment
or a flag. Groups live with what they configure (the spool's, each destination's); `config`
composes them into the one `Settings`."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, dataclass_transform, overload

_T = TypeVar("_T")
_Group = TypeVar("_Group")


@dataclass_transform(frozen_default=True)
def settings_group(cls: type[_Group]) -> type[_Group]:
    """A settings group: frozen fields for `config.Settings` to compose, never built itself,
    so none of a dataclass's methods are made for it (each is compiled at every start: for
    the ten groups ~4 % of the agent's start-up instructions)."""
    return dataclass(frozen=True, init=False, repr=False, eq=False)(cls)


@dataclass(frozen=True, eq=False)
class Rule(Generic[_T]):
    """How a value is checked: `parse` returns it as the field's type or raises ValueError;
    `kind` names it in `--help` (`str`, `int`, `path`, ...); `allowed` says what passes."""

    kind: str
    parse: Callable[[Any], _T]
    allowed: str


@overload
def setting(default: None, rule: Rule[_T], help: str, *, secret: bool = False) -> _T | None: ...


@overload
def setting(default: _T, rule: Rule[_T], help: str, *, secret: bool = False) -> _T: ...


def setting(default: Any, rule: Rule[Any], help: str, *, secret: bool = False) -> Any:
    """One setting, declared once: its default (checked against the rule's type by mypy), how
    its text is checked, and what it does. A `secret` is never shown, logged or taken as a
    flag. The env var and the flag follow from its name (`config.env_name`, `flag_name`)."""
    return dataclasses.field(
        default=default, repr=not secret, metadata={"rule": rule, "help": help, "secret": secret}
    )


def number(
    kind: type[int] | type[float], minimum: float, allowed: str, maximum: float = math.inf
) -> Rule[Any]:
    """An int or a float between `minimum` and `maximum`."""

    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, str):
            value = kind(value.strip())
        elif kind is float and isinstance(value, int):
            value = float(value)
        if (
            not isinstance(value, kind)
            or not math.isfinite(value)
            or not minimum <= value <= maximum
        ):
            raise ValueError
        return value

    return Rule(kind.__name__, parse, allowed)


def choice(*choices: str) -> Rule[str]:
    """One of `choices`, any case."""

    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError
        return value.lower()

    return Rule("str", parse, "one of " + ", ".join(choices))


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError
    return str(value)


def _secret(value: Any) -> str:
    # A Secret made with `--from-file` ends in a newline: requests then refuses the header and
    # its error message carries the token.
    token = _text(value).strip()
    if any(character.isspace() for character in token):
        raise ValueError
    return token


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise ValueError


def _auto_bool(value: Any) -> bool | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return _bool(value)


def _path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if not isinstance(value, str) or not value:
        raise ValueError
    return Path(value)


def _tags(value: Any) -> dict[str, str]:
    """Key-value pairs from a mapping (YAML), a JSON object, or `k=v,k2=v2`."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            pairs = [item.partition("=") for item in text.split(",") if item.strip()]
            if not pairs or any(not sep or not key.strip() for key, sep, _ in pairs):
                raise ValueError
            value = {key.strip(): item.strip() for key, _, item in pairs}
    if not isinstance(value, dict) or not value:
        raise ValueError
    tags = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key or isinstance(item, bool | dict | list):
            raise ValueError
        tags[key] = "" if item is None else str(item)
    return tags


def _command(value: Any) -> str:
    """The command as a JSON array string: from a JSON array, a list (YAML) or a shell line."""
    if isinstance(value, list):
        parts = value
    elif isinstance(value, str):
        try:
            parts = json.loads(value)
        except ValueError:
            parts = None
        if not isinstance(parts, list):
            parts = shlex.split(value)  # ValueError on an unbalanced quote
    else:
        raise ValueError
    if not parts or not all(isinstance(part, str) for part in parts):
        raise ValueError
    return json.dumps(parts)


def _url(value: Any) -> str:
    text = _text(value).strip()
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError
    return text.rstrip("/")


TEXT = Rule("str", _text, "a string")
SECRET = Rule("str", _secret, "a token (no spaces inside)")
BOOL = Rule("bool", _bool, "true or false")
AUTO_BOOL = Rule("bool", _auto_bool, "true, false or auto")
PATH = Rule("path", _path, "a non-empty path")
URL = Rule("str", _url, "an http:// or https:// URL")
TAGS = Rule("dict", _tags, "k=v,k2=v2 or a JSON object of strings")
COMMAND = Rule("str", _command, "a command line or a JSON array of strings")
SECONDS_POSITIVE: Rule[float] = number(float, 0.001, "a number of seconds >= 0.001")
SECONDS: Rule[float] = number(float, 0, "a number of seconds >= 0")
BYTES: Rule[int] = number(int, 1, "a whole number of bytes >= 1")
