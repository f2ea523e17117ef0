"""Settings: defaults < YAML file < environment variables < CLI flags, validated in one place."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

CONFIG_ENV = "TRACKER_CONFIG"


class ConfigError(Exception):
    """A setting has a value the agent cannot use; the message is one line for the user."""


class Mode(StrEnum):
    """Where the data goes."""

    SENTINEL = "sentinel"  # a token is set: the Sentinel API, its S3 and STS credentials
    S3 = "s3"  # an S3 URI and no token: your bucket, boto3's default credentials
    LOCAL = "local"  # neither: a local directory


class Schema(StrEnum):
    """The CSV columns: the 32 Sentinel takes, or those plus the workload cgroup's."""

    SENTINEL = "sentinel"
    EXTENDED = "extended"


@dataclass(frozen=True)
class Settings:
    """Every setting of the agent; see README "Configuration" for each one."""

    interval: float = 1.0
    upload_interval: float = 60.0
    upload_threshold_bytes: int = 4 * 1024 * 1024
    max_chunk_bytes: int = 8 * 1024 * 1024
    inline_max_bytes: int = 1024 * 1024
    shutdown_timeout: float = 20.0
    workload_wait: float = 30.0
    exit_with_workload: bool = True
    spool_dir: Path = Path("/var/lib/sentinel-sidecar")
    output_dir: Path | None = None
    schema: Schema = Schema.SENTINEL
    proc_root: Path = Path("/proc")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    pid: int | None = None
    cgroup: str | None = None
    log_level: str = "info"
    log_format: str = "json"
    health_port: int = 8080
    k8s_exit_code: bool = False
    k8s_container_name: str = "sentinel-sidecar"
    k8s_workload_container: str | None = None
    sentinel_api_url: str = "https://api.sentinel.sparecores.net"
    sentinel_api_token: str | None = dataclasses.field(default=None, repr=False)
    sentinel_api_token_file: Path | None = None
    s3_uri: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    project_name: str | None = None
    job_name: str | None = None
    stage_name: str | None = None
    task_name: str | None = None
    team: str | None = None
    env: str | None = None
    language: str | None = None
    orchestrator: str | None = None
    executor: str | None = None
    external_run_id: str | None = None
    container_image: str | None = None
    command: str | None = None  # a JSON array of strings, as the API takes it
    tags: dict[str, str] | None = None
    cloud_vendor_id: str | None = None
    cloud_account_id: str | None = None
    cloud_region_id: str | None = None
    cloud_zone_id: str | None = None
    cloud_instance_type: str | None = None

    @property
    def local_output_dir(self) -> Path:
        """Where local mode writes chunks: `output_dir`, else `<spool_dir>/output`."""
        return self.output_dir if self.output_dir is not None else self.spool_dir / "output"

    def metadata(self) -> dict[str, Any]:
        """The run metadata fields of the Sentinel API that are set."""
        values = {name: getattr(self, name) for name in METADATA_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    def cloud(self) -> dict[str, str]:
        """The `cloud_*` fields that are configured (never probed from the network)."""
        values = {name: getattr(self, name) for name in CLOUD_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    @property
    def mode(self) -> Mode:
        """Sentinel with a token, else S3 with an S3 URI, else local."""
        if self.sentinel_api_token or self.sentinel_api_token_file:
            return Mode.SENTINEL
        return Mode.S3 if self.s3_uri else Mode.LOCAL


METADATA_FIELDS = (
    "project_name",
    "job_name",
    "stage_name",
    "task_name",
    "team",
    "env",
    "language",
    "orchestrator",
    "executor",
    "external_run_id",
    "container_image",
    "command",
    "tags",
)

CLOUD_FIELDS = (
    "cloud_vendor_id",
    "cloud_account_id",
    "cloud_region_id",
    "cloud_zone_id",
    "cloud_instance_type",
)

SECRET_FIELDS = frozenset({"sentinel_api_token"})

# Names taken from the environment as-is; every other setting is TRACKER_<NAME>.
_ENV_OVERRIDES = {
    "sentinel_api_url": "SENTINEL_API_URL",
    "sentinel_api_token": "SENTINEL_API_TOKEN",
    "sentinel_api_token_file": "SENTINEL_API_TOKEN_FILE",
    "s3_endpoint_url": "S3_ENDPOINT_URL",
    "aws_region": "AWS_REGION",
}


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    return _ENV_OVERRIDES.get(field, "TRACKER_" + field.upper())


def flag_name(field: str) -> str:
    """The CLI flag that sets `field`."""
    return "--" + field.replace("_", "-")


@dataclass(frozen=True)
class _Rule:
    kind: str
    parse: Callable[[Any], Any]
    allowed: str


def _number(
    kind: type[int] | type[float], minimum: float, allowed: str, maximum: float = math.inf
) -> _Rule:
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

    return _Rule(kind.__name__, parse, allowed)


def _choice(*choices: str) -> _Rule:
    def parse(value: Any) -> str:
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError
        return value.lower()

    return _Rule("str", parse, "one of " + ", ".join(choices))


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


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        return _BOOLEANS[value.strip().lower()]
    raise ValueError


_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


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


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix without slashes at the ends); ValueError if bad."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{uri!r} has no valid bucket name")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"{uri!r} has an empty, '.' or '..' path segment")
    return bucket, prefix


def _s3_uri(value: Any) -> str:
    parse_s3_uri(_text(value))
    return str(value)


_TEXT = _Rule("str", _text, "a string")
_BOOL = _Rule("bool", _bool, "true or false")
_PATH = _Rule("path", _path, "a non-empty path")
_SECONDS_POSITIVE = _number(float, 0.001, "a number of seconds >= 0.001")
_SECONDS = _number(float, 0, "a number of seconds >= 0")
_BYTES = _number(int, 1, "a whole number of bytes >= 1")

_RULES: dict[str, _Rule] = {
    "interval": _SECONDS_POSITIVE,
    "upload_interval": _SECONDS_POSITIVE,
    "upload_threshold_bytes": _BYTES,
    "max_chunk_bytes": _BYTES,
    "inline_max_bytes": _number(int, 0, "a whole number of bytes >= 0"),
    "shutdown_timeout": _SECONDS_POSITIVE,
    "workload_wait": _SECONDS,
    "exit_with_workload": _BOOL,
    "spool_dir": _PATH,
    "output_dir": _PATH,
    "schema": _Rule(
        "str", lambda value: Schema(_choice(*Schema).parse(value)), "one of " + ", ".join(Schema)
    ),
    "proc_root": _PATH,
    "cgroup_root": _PATH,
    "pid": _number(int, 1, "a process id >= 1"),
    "cgroup": _TEXT,
    "log_level": _choice("debug", "info", "warning", "error"),
    "log_format": _choice("json", "console"),
    "health_port": _number(int, 0, "a port number 0-65535 (0 = off)", 65535),
    "k8s_exit_code": _BOOL,
    "k8s_container_name": _TEXT,
    "k8s_workload_container": _TEXT,
    "sentinel_api_url": _TEXT,
    "sentinel_api_token": _Rule("str", _secret, "a token (no spaces inside)"),
    "sentinel_api_token_file": _PATH,
    "s3_uri": _Rule("str", _s3_uri, "an s3://bucket/prefix URI"),
    "s3_endpoint_url": _TEXT,
    "aws_region": _TEXT,
    **dict.fromkeys(METADATA_FIELDS + CLOUD_FIELDS, _TEXT),
    "command": _Rule("str", _command, "a command line or a JSON array of strings"),
    "tags": _Rule("dict", _tags, "k=v,k2=v2 or a JSON object of strings"),
}

FIELDS = tuple(field.name for field in dataclasses.fields(Settings))
assert set(_RULES) == set(FIELDS), "every setting needs a validation rule"


def _validate(field: str, value: Any, source: str) -> Any:
    rule = _RULES[field]
    try:
        parsed = rule.parse(value)
    except (ValueError, TypeError):
        shown = "<redacted>" if field in SECRET_FIELDS else repr(value)
        raise ConfigError(
            f"{field} ({source}): {shown} is not allowed; expected {rule.allowed}"
        ) from None
    return parsed


def read_yaml(path: Path) -> dict[str, Any]:
    """Settings from a YAML mapping file, validated key by key."""
    import yaml  # only with a config file: ~2 MiB the agent does not need otherwise

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML ({_one_line(exc)})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path}: must be a mapping of setting: value, got {type(data).__name__}"
        )
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _RULES:
            raise ConfigError(
                f"config file {path}: unknown setting {key!r}; allowed: {', '.join(FIELDS)}"
            )
        if value is not None:
            values[key] = _validate(key, value, f"config file {path}")
    return values


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from environment variables (empty values count as unset)."""
    values: dict[str, Any] = {}
    for field in FIELDS:
        name = env_name(field)
        raw = environ.get(name)
        if raw:
            values[field] = _validate(field, raw, f"env {name}")
    return values


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per setting, plus `--config`; flags default to unset."""
    parser.add_argument("--config", metavar="PATH", help=f"YAML settings file (or ${CONFIG_ENV})")
    for field in FIELDS:
        if field in SECRET_FIELDS:
            continue  # secrets on a command line leak into `ps`; env or file only
        parser.add_argument(flag_name(field), dest=field, metavar=field.upper(), default=None)


def load(
    args: argparse.Namespace,
    environ: Mapping[str, str],
    defaults: Mapping[str, Any] | None = None,
) -> Settings:
    """The effective settings for parsed CLI `args` and `environ`, or ConfigError.

    `defaults` replace the built-in defaults (the demo uses its own directories).
    """
    values: dict[str, Any] = dict(defaults or {})
    config_path = getattr(args, "config", None) or environ.get(CONFIG_ENV)
    if config_path:
        values.update(read_yaml(Path(config_path)))
    values.update(read_env(environ))
    for field in FIELDS:
        raw = getattr(args, field, None)
        if raw is not None:
            values[field] = _validate(field, raw, f"flag {flag_name(field)}")
    return Settings(**values)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
