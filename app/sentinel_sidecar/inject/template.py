"""The injection template: what `inject` adds to a pod, as the chart renders it from the named
templates its own pods use (so an injected agent is the chart's agent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sentinel_sidecar.config import ConfigError
from sentinel_sidecar.inject.patch import Template


def load_template(path: Path) -> Template:
    """The `Template` in the YAML file `path`: `native` and `classic` (the agent's container
    in each mode), `volumes`, `nativeByDefault`; ConfigError naming `--template` when it is not
    one."""
    where = f"inject --template {path}"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: not a mapping")
    native, classic, volumes = data.get("native"), data.get("classic"), data.get("volumes")
    if not (_container(native) and _container(classic)):
        raise ConfigError(f"{where}: `native` and `classic` must each be a container with a name")
    assert isinstance(native, dict) and isinstance(classic, dict)
    if native.get("restartPolicy") != "Always" or "restartPolicy" in classic:
        raise ConfigError(f"{where}: `native` needs restartPolicy Always, `classic` none")
    if native["name"] != classic["name"]:
        raise ConfigError(f"{where}: `native` and `classic` have different names")
    if not isinstance(volumes, list) or not all(_named(volume) for volume in volumes):
        raise ConfigError(f"{where}: `volumes` must be a list of named volumes")
    native_by_default = data.get("nativeByDefault", True)
    if not isinstance(native_by_default, bool):
        raise ConfigError(f"{where}: `nativeByDefault` must be true or false")
    return Template(native, classic, volumes, native_by_default)


def _named(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("name"), str) and bool(value["name"])


def _container(value: Any) -> bool:
    return _named(value) and isinstance(value.get("image"), str)
