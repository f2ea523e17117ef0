"""Settings: defaults < YAML file < environment variables < CLI flags, validated in one place."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

CONFIG_ENV = "TRACKER_CONFIG"
SPOOL_MIN_SEGMENTS = 8  # spool_max_bytes holds at least this many segments
# The spool keeps room for this many segments even when local-mode output fills the cap.
LOCAL_FLOOR_SEGMENTS = 3


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


def _auto_bool(value: Any) -> bool | None:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None
    return _bool(value)


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


def _url(value: Any) -> str:
    text = _text(value).strip()
    if not re.match(r"^https?://[^/\s]+", text):
        raise ValueError
    return text.rstrip("/")


def _s3_uri(value: Any) -> str:
    parse_s3_uri(_text(value))
    return str(value)


_TEXT = _Rule("str", _text, "a string")
_BOOL = _Rule("bool", _bool, "true or false")
_PATH = _Rule("path", _path, "a non-empty path")
_SECONDS_POSITIVE = _number(float, 0.001, "a number of seconds >= 0.001")
_SECONDS = _number(float, 0, "a number of seconds >= 0")
_BYTES = _number(int, 1, "a whole number of bytes >= 1")

_SCHEMA = _Rule(
    "str", lambda value: Schema(_choice(*Schema).parse(value)), "one of " + ", ".join(Schema)
)
_URL = _Rule("str", _url, "an http:// or https:// URL")


def _setting(default: Any, rule: _Rule, help: str, *, repr: bool = True) -> Any:
    """One setting, declared once: its default, how its text is checked, and what it does.
    The env var and the flag follow from its name (`env_name`, `flag_name`)."""
    return dataclasses.field(default=default, repr=repr, metadata={"rule": rule, "help": help})


@dataclass(frozen=True)
class Settings:
    """Every setting of the agent, each declared once with `_setting` (default, rule, help):
    validation, `--help` and the README's settings table all come from here."""

    interval: float = _setting(1.0, _SECONDS_POSITIVE, "seconds between samples (> 0)")
    upload_interval: float = _setting(
        60.0,
        _SECONDS_POSITIVE,
        "seconds between chunk uploads; the spool is fsynced at least this often",
    )
    upload_threshold_bytes: int = _setting(
        4 * 1024 * 1024, _BYTES, "upload early when this many bytes are pending"
    )
    max_chunk_bytes: int = _setting(
        8 * 1024 * 1024,
        _BYTES,
        "largest raw chunk (whole rows; a longer single row still goes whole)",
    )
    max_chunk_refusals: int = _setting(
        5,
        _number(int, 1, "a whole number >= 1"),
        "a chunk the destination refuses for good (HTTP 400, 413, 422) this many times in a "
        "row is set aside in `<spool_dir>/refused/` and delivery goes on with the next rows",
    )
    inline_max_bytes: int = _setting(
        1024 * 1024,
        _number(int, 0, "a whole number of bytes >= 0"),
        "Sentinel mode: a run this small that never uploaded a chunk goes inline with the finish",
    )
    shutdown_timeout: float = _setting(
        20.0, _SECONDS_POSITIVE, "seconds for the last sample, drain and finish after a stop"
    )
    workload_wait: float = _setting(
        30.0,
        _SECONDS,
        "seconds to wait for a workload process; then the hint, and with exit_with_workload "
        "the end of the run",
    )
    exit_with_workload: bool = _setting(
        True,
        _BOOL,
        "finish when the workload's processes are gone (classic sidecar); `false` for a "
        "native sidecar",
    )
    spool_dir: Path = _setting(
        Path("/var/lib/sentinel-sidecar"),
        _PATH,
        "spool: `segment-*.csv`, `state.json`, `exit_code` (an emptyDir in a pod)",
    )
    spool_max_bytes: int = _setting(
        256 * 1024 * 1024,
        _number(
            int,
            SPOOL_MIN_SEGMENTS * 4096,
            f"a whole number of bytes >= {SPOOL_MIN_SEGMENTS * 4096}",
        ),
        "cap of the spool's segment files (with local-mode output inside spool_dir); "
        f"undelivered rows past it are merged into coarser ones; >= {SPOOL_MIN_SEGMENTS} segments",
    )
    spool_segment_bytes: int = _setting(
        2 * 1024 * 1024,
        _number(int, 4096, "a whole number of bytes >= 4096"),
        "size at which a spool segment is closed and a new one begun; a delivered segment "
        "is deleted",
    )
    output_dir: Path | None = _setting(
        None, _PATH, "local mode: where chunks and `run.json` go (default `<spool_dir>/output`)"
    )
    schema: Schema = _setting(
        Schema.SENTINEL,
        _SCHEMA,
        "`sentinel` (32 columns) or `extended` (+ cgroup columns; local and direct S3 only)",
    )
    proc_root: Path = _setting(Path("/proc"), _PATH, "where /proc is mounted")
    cgroup_root: Path = _setting(
        Path("/sys/fs/cgroup"), _PATH, "where the cgroup filesystem is mounted"
    )
    pid: int | None = _setting(
        None,
        _number(int, 1, "a process id >= 1"),
        "track this process and its descendants instead of discovering the workload",
    )
    cgroup: str | None = _setting(
        None,
        _TEXT,
        "track this cgroup (path under cgroup_root) instead of discovering the workload",
    )
    log_level: str = _setting(
        "info",
        _choice("debug", "info", "warning", "error"),
        "`debug`, `info`, `warning` or `error`",
    )
    progress_interval: float = _setting(
        300.0,
        _SECONDS,
        "seconds between `progress` log lines (rows, chunks, pending bytes); 0 = off",
    )
    log_format: str = _setting(
        "json", _choice("json", "console"), "`json` (one object per line) or `console` (for humans)"
    )
    health_port: int = _setting(
        8080,
        _number(int, 0, "a port number 0-65535 (0 = off)", 65535),
        "port of /healthz, /readyz and /metrics; `0` = off",
    )
    k8s_exit_code: bool = _setting(
        False,
        _BOOL,
        "without an `exit_code` file, read the workload container's exit code from the pod's "
        "status (in-cluster API, needs `k8s/rbac.yaml`)",
    )
    k8s_container_name: str = _setting(
        "sentinel-sidecar", _TEXT, "the agent's own container name, skipped in that lookup"
    )
    k8s_workload_container: str | None = _setting(
        None,
        _TEXT,
        "the workload container to take the exit code from; default: any other (first "
        "non-zero wins)",
    )
    sentinel_api_url: str = _setting(
        "https://api.sentinel.sparecores.net", _URL, "Sentinel API base URL"
    )
    sentinel_api_token: str | None = _setting(
        None,
        _Rule("str", _secret, "a token (no spaces inside)"),
        "Sentinel API token (env or file only; never logged)",
        repr=False,
    )
    sentinel_api_token_file: Path | None = _setting(
        None, _PATH, "file holding the token (a mounted Secret); read again after a 401"
    )
    s3_uri: str | None = _setting(
        None,
        _Rule("str", _s3_uri, "an s3://bucket/prefix URI"),
        "direct S3 mode: `s3://bucket/prefix` (boto3's default credentials)",
    )
    s3_endpoint_url: str | None = _setting(None, _URL, "S3-compatible endpoint (MinIO, ...)")
    aws_region: str | None = _setting(
        None,
        _TEXT,
        "region for S3 when the credentials name none (else the bucket's own, by HeadBucket)",
    )
    project_name: str | None = _setting(None, _TEXT, "run metadata: project")
    job_name: str | None = _setting(None, _TEXT, "run metadata: job")
    stage_name: str | None = _setting(None, _TEXT, "run metadata: stage")
    task_name: str | None = _setting(None, _TEXT, "run metadata: task")
    team: str | None = _setting(None, _TEXT, "run metadata: team")
    env: str | None = _setting(None, _TEXT, "run metadata: environment (prod, dev, ...)")
    language: str | None = _setting(None, _TEXT, "run metadata: the workload's language")
    orchestrator: str | None = _setting(
        None, _TEXT, "run metadata: orchestrator (kubernetes, docker-compose, ...)"
    )
    executor: str | None = _setting(None, _TEXT, "run metadata: executor")
    external_run_id: str | None = _setting(
        None, _TEXT, "run metadata: your run id (default: the pod's UID, `POD_UID`)"
    )
    container_image: str | None = _setting(None, _TEXT, "run metadata: the workload's image")
    command: str | None = _setting(
        None,
        _Rule("str", _command, "a command line or a JSON array of strings"),
        "run metadata: the workload's command, a command line or a JSON array",
    )
    tags: dict[str, str] | None = _setting(
        None,
        _Rule("dict", _tags, "k=v,k2=v2 or a JSON object of strings"),
        "run metadata: `k=v,k2=v2`, a JSON object or a YAML mapping",
    )
    cloud_detect: bool | None = _setting(
        None,
        _Rule("bool", _auto_bool, "true, false or auto"),
        "find the cloud, region, zone and instance type: the node's labels (needs `get` on "
        "nodes), else the cloud's metadata service; your cloud_* settings always win; unset "
        "(`auto`): only in a pod (`KUBERNETES_SERVICE_HOST` set), so a laptop or CI machine "
        "asks no metadata address",
    )
    cloud_metadata_url: str = _setting(
        "http://169.254.169.254", _URL, "base URL of the cloud metadata services probed"
    )
    send_host_identity: bool = _setting(
        True, _BOOL, "send host_id, host_hostname and host_ip with the run; `false` = never"
    )
    cloud_vendor_id: str | None = _setting(
        None, _TEXT, "cloud: vendor id (aws, gcp, azure, hcloud, upcloud, ...)"
    )
    cloud_account_id: str | None = _setting(None, _TEXT, "cloud: account or project id")
    cloud_region_id: str | None = _setting(None, _TEXT, "cloud: region")
    cloud_zone_id: str | None = _setting(None, _TEXT, "cloud: zone")
    cloud_instance_type: str | None = _setting(None, _TEXT, "cloud: instance type")

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

    def effective(self) -> dict[str, Any]:
        """The settings in force, as log fields: unset ones left out, secrets never shown."""
        shown: dict[str, Any] = {"mode": str(self.mode)}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name in SECRET_FIELDS:
                value = "<set>"
            shown[field.name] = str(value) if isinstance(value, Path | StrEnum) else value
        return shown

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


FIELDS = tuple(field.name for field in dataclasses.fields(Settings))
_RULES: dict[str, _Rule] = {
    field.name: field.metadata["rule"] for field in dataclasses.fields(Settings)
}
DEFAULTS: dict[str, Any] = {field.name: field.default for field in dataclasses.fields(Settings)}
HELP: dict[str, str] = {
    field.name: field.metadata["help"] for field in dataclasses.fields(Settings)
}


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
            continue  # warned about by unknown_settings, with the closest known name
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


_METAVARS = {"str": "TEXT", "dict": "K=V,...", "bool": "true|false"}


def shown_default(field: str) -> str:
    """The default of `field` as a user writes it (`1`, `true`, `/proc`); `-` for unset."""
    value = DEFAULTS[field]
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add one `--flag` per setting, plus `--config`; flags default to unset."""
    parser.add_argument("--config", metavar="PATH", help=f"YAML settings file (or ${CONFIG_ENV})")
    for field in FIELDS:
        if field in SECRET_FIELDS:
            continue  # secrets on a command line leak into `ps`; env or file only
        parser.add_argument(
            flag_name(field),
            dest=field,
            metavar=_METAVARS.get(_RULES[field].kind, _RULES[field].kind.upper()),
            default=None,
            help=f"{HELP[field].replace('%', '%%')} [default: {shown_default(field)}; "
            f"env {env_name(field)}]",
        )


def settings_table() -> str:
    """The README's settings table (Markdown), made from the declarations."""
    rows = ["| setting | env var | flag | default | meaning |", "|---|---|---|---|---|"]
    for field in FIELDS:
        flag = "- (env or file only)" if field in SECRET_FIELDS else f"`{flag_name(field)}`"
        default = shown_default(field)
        default = "-" if default == "-" else f"`{default}`"
        rows.append(f"| `{field}` | `{env_name(field)}` | {flag} | {default} | {HELP[field]} |")
    return "\n".join(rows) + "\n"


def unknown_settings(environ: Mapping[str, str], config_path: Path | None) -> list[str]:
    """One warning per `TRACKER_*`/`SENTINEL_*` variable or YAML key that names no setting,
    with the closest known name: a typo must not pass unnoticed."""
    known_env = {env_name(field) for field in FIELDS} | {CONFIG_ENV}
    warnings = []
    for name in sorted(environ):
        if name.startswith(("TRACKER_", "SENTINEL_")) and name not in known_env:
            warnings.append(_unknown(f"env {name}", name, sorted(known_env)))
    for key in _yaml_keys(config_path):
        if key not in _RULES:
            warnings.append(_unknown(f"config file {config_path} key {key!r}", key, FIELDS))
    return warnings


def _unknown(where: str, name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"{where} is not a setting and is ignored{hint}"


def _yaml_keys(path: Path | None) -> list[str]:
    if path is None:
        return []
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []  # load() already refused it
    return [str(key) for key in data] if isinstance(data, dict) else []


def in_pod(environ: Mapping[str, str]) -> bool:
    """True in a Kubernetes pod: the kubelet sets KUBERNETES_SERVICE_HOST in every container."""
    return bool(environ.get("KUBERNETES_SERVICE_HOST"))


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
    if values.get("cloud_detect") is None:
        values["cloud_detect"] = in_pod(environ)
    settings = Settings(**values)
    if settings.spool_max_bytes < SPOOL_MIN_SEGMENTS * settings.spool_segment_bytes:
        raise ConfigError(
            f"spool_max_bytes: {settings.spool_max_bytes} is not allowed; expected >= "
            f"{SPOOL_MIN_SEGMENTS} x spool_segment_bytes ({settings.spool_segment_bytes})"
        )
    return settings


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
