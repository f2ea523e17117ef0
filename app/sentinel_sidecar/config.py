"""Settings: defaults < YAML file < environment variables < CLI flags, validated in one place.

`Settings` is composed of groups, each declared where it belongs with `setting.setting`
(default, rule, help): the spool's, the upload worker's, one per destination (registered in
`delivery/registry.py`), and the agent's own below. Validation, `--help` and the settings
table in docs/settings.md all come from the groups, in this order."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, TypedDict, cast

from sentinel_sidecar.delivery import registry
from sentinel_sidecar.delivery.local import LocalSettings
from sentinel_sidecar.delivery.s3 import S3Settings
from sentinel_sidecar.delivery.sentinel import SentinelSettings
from sentinel_sidecar.delivery.upload import UploadSettings
from sentinel_sidecar.measure.rows import Schema
from sentinel_sidecar.setting import (
    AUTO_BOOL,
    BOOL,
    COMMAND,
    PATH,
    SECONDS,
    SECONDS_POSITIVE,
    TAGS,
    TEXT,
    URL,
    Rule,
    choice,
    number,
    setting,
    settings_group,
)
from sentinel_sidecar.spool.store import MIN_SEGMENTS, SpoolSettings

CONFIG_ENV = "TRACKER_CONFIG"


EXIT_USAGE = 2  # the exit code of bad input: a ConfigError, a report that cannot be made


class ConfigError(Exception):
    """A setting has a value the agent cannot use; the message is one line for the user."""


@settings_group
class SamplingSettings:
    """What is sampled, how often, and when the workload counts as gone."""

    TITLE: ClassVar[str] = "Sampling"

    interval: float = setting(1.0, SECONDS_POSITIVE, "seconds between samples (> 0)")
    schema: Schema = setting(
        Schema.SENTINEL,
        Rule(
            "str", lambda value: Schema(choice(*Schema).parse(value)), "one of sentinel, extended"
        ),
        "`sentinel` (32 columns) or `extended` (+ cgroup columns; local and direct S3 only)",
    )
    proc_root: Path = setting(Path("/proc"), PATH, "where /proc is mounted")
    cgroup_root: Path = setting(
        Path("/sys/fs/cgroup"), PATH, "where the cgroup filesystem is mounted"
    )
    pid: int | None = setting(
        None,
        number(int, 1, "a process id >= 1"),
        "track this process and its descendants instead of discovering the workload",
    )
    cgroup: str | None = setting(
        None,
        TEXT,
        "track this cgroup (path under cgroup_root) instead of discovering the workload",
    )
    workload_wait: float = setting(
        30.0,
        SECONDS,
        "seconds to wait for a workload process; then the hint, and with exit_with_workload "
        "the end of the run",
    )
    exit_with_workload: bool = setting(
        True,
        BOOL,
        "finish when the workload's processes are gone (classic sidecar); `false` for a "
        "native sidecar",
    )


@settings_group
class KubernetesSettings:
    """The workload's exit code from the pod's status, when no `exit_code` file holds it."""

    TITLE: ClassVar[str] = "Kubernetes"

    k8s_exit_code: bool = setting(
        False,
        BOOL,
        "without an `exit_code` file, read the workload container's exit code from the pod's "
        "status (in-cluster API, needs `k8s/rbac.yaml`)",
    )
    k8s_container_name: str = setting(
        "sentinel-sidecar", TEXT, "the agent's own container name, skipped in that lookup"
    )
    k8s_workload_container: str | None = setting(
        None,
        TEXT,
        "the workload container to take the exit code from; default: any other (first "
        "non-zero wins)",
    )


class RunMetadata(TypedDict, total=False):
    """The run metadata fields of the Sentinel API that are set (`Settings.metadata`)."""

    project_name: str
    job_name: str
    stage_name: str
    task_name: str
    team: str
    env: str
    language: str
    orchestrator: str
    executor: str
    external_run_id: str
    container_image: str
    command: str  # a JSON array of strings
    tags: dict[str, str]


@settings_group
class MetadataSettings:
    """Run metadata, sent with the run (Sentinel) or written to `run.json`."""

    TITLE: ClassVar[str] = "Run metadata"

    project_name: str | None = setting(None, TEXT, "run metadata: project")
    job_name: str | None = setting(None, TEXT, "run metadata: job")
    stage_name: str | None = setting(None, TEXT, "run metadata: stage")
    task_name: str | None = setting(None, TEXT, "run metadata: task")
    team: str | None = setting(None, TEXT, "run metadata: team")
    env: str | None = setting(None, TEXT, "run metadata: environment (prod, dev, ...)")
    language: str | None = setting(None, TEXT, "run metadata: the workload's language")
    orchestrator: str | None = setting(
        None, TEXT, "run metadata: orchestrator (kubernetes, docker-compose, ...)"
    )
    executor: str | None = setting(None, TEXT, "run metadata: executor")
    external_run_id: str | None = setting(
        None, TEXT, "run metadata: your run id (default: the pod's UID, `POD_UID`)"
    )
    container_image: str | None = setting(None, TEXT, "run metadata: the workload's image")
    command: str | None = setting(
        None, COMMAND, "run metadata: the workload's command, a command line or a JSON array"
    )
    tags: dict[str, str] | None = setting(
        None, TAGS, "run metadata: `k=v,k2=v2`, a JSON object or a YAML mapping"
    )


@settings_group
class CloudSettings:
    """The host and its cloud: found where allowed, your values always win."""

    TITLE: ClassVar[str] = "Host and cloud"

    cloud_detect: bool | None = setting(
        None,
        AUTO_BOOL,
        "find the cloud, region, zone and instance type: the node's labels (needs `get` on "
        "nodes), else the cloud's metadata service; your cloud_* settings always win; unset "
        "(`auto`): only in a pod (`KUBERNETES_SERVICE_HOST` set), so a laptop or CI machine "
        "asks no metadata address",
    )
    cloud_metadata_url: str = setting(
        "http://169.254.169.254", URL, "base URL of the cloud metadata services probed"
    )
    send_host_identity: bool = setting(
        True, BOOL, "send host_id, host_hostname and host_ip with the run; `false` = never"
    )
    cloud_vendor_id: str | None = setting(
        None, TEXT, "cloud: vendor id (aws, gcp, azure, hcloud, upcloud, ...)"
    )
    cloud_account_id: str | None = setting(None, TEXT, "cloud: account or project id")
    cloud_region_id: str | None = setting(None, TEXT, "cloud: region")
    cloud_zone_id: str | None = setting(None, TEXT, "cloud: zone")
    cloud_instance_type: str | None = setting(None, TEXT, "cloud: instance type")


@settings_group
class AgentSettings:
    """The agent's own logs and probes."""

    TITLE: ClassVar[str] = "Logs and probes"

    log_level: str = setting(
        "info", choice("debug", "info", "warning", "error"), "`debug`, `info`, `warning` or `error`"
    )
    log_format: str = setting(
        "json", choice("json", "console"), "`json` (one object per line) or `console` (for humans)"
    )
    progress_interval: float = setting(
        300.0,
        SECONDS,
        "seconds between `progress` log lines (rows, chunks, pending bytes); 0 = off",
    )
    health_port: int = setting(
        8080,
        number(int, 0, "a port number 0-65535 (0 = off)", 65535),
        "port of /healthz, /readyz and /metrics; `0` = off",
    )


@dataclass(frozen=True, eq=False)
class PodEnv:
    """What the kubelet tells a container through its environment: the Downward API variables
    the manifests in k8s/ set, and the API's service address (set in every pod). Read once,
    here; nothing else reads the environment for them."""

    in_pod: bool = False  # KUBERNETES_SERVICE_HOST is set
    service_host: str | None = None
    service_port: str = "443"
    name: str | None = None  # POD_NAME
    namespace: str | None = None  # POD_NAMESPACE
    uid: str | None = None  # POD_UID
    node_name: str | None = None  # NODE_NAME
    ip: str | None = None  # HOST_IP, else POD_IP

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> PodEnv:
        """The values in `environ` (empty ones count as unset)."""
        host = environ.get("KUBERNETES_SERVICE_HOST") or None
        return cls(
            in_pod=host is not None,
            service_host=host,
            service_port=environ.get("KUBERNETES_SERVICE_PORT") or "443",
            name=environ.get("POD_NAME") or None,
            namespace=environ.get("POD_NAMESPACE") or None,
            uid=environ.get("POD_UID") or None,
            node_name=environ.get("NODE_NAME") or None,
            ip=environ.get("HOST_IP") or environ.get("POD_IP") or None,
        )


# The groups in the order of `--help` and the settings table; `Settings` lists them reversed
# because a dataclass takes its bases' fields from the last base to the first.
GROUPS: tuple[type, ...] = (
    SamplingSettings,
    SpoolSettings,
    UploadSettings,
    SentinelSettings,
    S3Settings,
    LocalSettings,
    KubernetesSettings,
    MetadataSettings,
    CloudSettings,
    AgentSettings,
)


@dataclass(frozen=True)
class Settings(
    AgentSettings,
    CloudSettings,
    MetadataSettings,
    KubernetesSettings,
    LocalSettings,
    S3Settings,
    SentinelSettings,
    UploadSettings,
    SpoolSettings,
    SamplingSettings,
):
    """Every setting of the agent: the groups above, composed; and the pod's environment."""

    pod: PodEnv = dataclasses.field(default_factory=PodEnv, compare=False)

    def metadata(self) -> RunMetadata:
        """The run metadata fields of the Sentinel API that are set."""
        values = {name: getattr(self, name) for name in METADATA_FIELDS}
        return cast(RunMetadata, {name: val for name, val in values.items() if val is not None})

    def cloud(self) -> dict[str, str]:
        """The `cloud_*` fields that are configured (never probed from the network)."""
        values = {name: getattr(self, name) for name in CLOUD_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    def effective(self) -> dict[str, Any]:
        """The settings in force, as log fields: unset ones left out, secrets never shown."""
        shown: dict[str, Any] = {"mode": self.mode}
        for field in dataclasses.fields(self):
            if field.name not in _FIELDS:
                continue
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name in SECRET_FIELDS:
                value = "<set>"
            shown[field.name] = str(value) if isinstance(value, Path | StrEnum) else value
        return shown

    @property
    def mode(self) -> str:
        """The destination's name: `sentinel` with a token, else `s3` with an S3 URI, else
        `local` (`delivery/registry.py`)."""
        return registry.chosen(self).name


def group_fields(group: type) -> tuple[str, ...]:
    """The settings a group declares itself, in order."""
    own = [
        field for field in dataclasses.fields(group) if field.name in vars(group)["__annotations__"]
    ]
    return tuple(field.name for field in own)


METADATA_FIELDS = tuple(RunMetadata.__annotations__)

CLOUD_FIELDS = (
    "cloud_vendor_id",
    "cloud_account_id",
    "cloud_region_id",
    "cloud_zone_id",
    "cloud_instance_type",
)

_FIELDS = {field.name: field for field in dataclasses.fields(Settings) if "rule" in field.metadata}
FIELDS = tuple(name for group in GROUPS for name in group_fields(group))
SECRET_FIELDS = frozenset(name for name, field in _FIELDS.items() if field.metadata["secret"])

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


_RULES: dict[str, Rule[Any]] = {name: field.metadata["rule"] for name, field in _FIELDS.items()}
DEFAULTS: dict[str, Any] = {name: field.default for name, field in _FIELDS.items()}
HELP: dict[str, str] = {name: field.metadata["help"] for name, field in _FIELDS.items()}


def validate(field: str, value: Any, source: str) -> Any:
    """`value` of the setting `field` as its rule parses it; ConfigError naming the field and
    `source` (where the value came from) when the rule refuses it."""
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
            values[key] = validate(key, value, f"config file {path}")
    return values


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from environment variables (empty values count as unset)."""
    values: dict[str, Any] = {}
    for field in FIELDS:
        name = env_name(field)
        raw = environ.get(name)
        if raw:
            values[field] = validate(field, raw, f"env {name}")
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
    """Add one `--flag` per setting, in a section per group, plus `--config`; flags default
    to unset."""
    parser.add_argument("--config", metavar="PATH", help=f"YAML settings file (or ${CONFIG_ENV})")
    for group in GROUPS:
        section = parser.add_argument_group(group.TITLE)  # type: ignore[attr-defined]
        for field in group_fields(group):
            if field in SECRET_FIELDS:
                continue  # secrets on a command line leak into `ps`; env or file only
            section.add_argument(
                flag_name(field),
                dest=field,
                metavar=_METAVARS.get(_RULES[field].kind, _RULES[field].kind.upper()),
                default=None,
                help=f"{HELP[field].replace('%', '%%')} [default: {shown_default(field)}; "
                f"env {env_name(field)}]",
            )


def settings_table() -> str:
    """The settings tables of docs/settings.md (Markdown), one per group, made from the
    declarations."""
    sections = []
    for group in GROUPS:
        rows = [f"**{group.TITLE}**", ""]  # type: ignore[attr-defined]
        rows += ["| setting | env var | flag | default | meaning |", "|---|---|---|---|---|"]
        for field in group_fields(group):
            flag = "- (env or file only)" if field in SECRET_FIELDS else f"`{flag_name(field)}`"
            default = shown_default(field)
            default = "-" if default == "-" else f"`{default}`"
            rows.append(f"| `{field}` | `{env_name(field)}` | {flag} | {default} | {HELP[field]} |")
        sections.append("\n".join(rows) + "\n")
    return "\n".join(sections)


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
    import difflib  # only for a misspelt name

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
            values[field] = validate(field, raw, f"flag {flag_name(field)}")
    pod = PodEnv.from_environ(environ)
    if values.get("cloud_detect") is None:
        values["cloud_detect"] = pod.in_pod
    settings = Settings(**values, pod=pod)
    if settings.spool_max_bytes < MIN_SEGMENTS * settings.spool_segment_bytes:
        raise ConfigError(
            f"spool_max_bytes: {settings.spool_max_bytes} is not allowed; expected >= "
            f"{MIN_SEGMENTS} x spool_segment_bytes ({settings.spool_segment_bytes})"
        )
    return settings


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
