"""Which pods get the agent, and the JSONPatch (RFC 6902) that adds it: what the manifests in
k8s/ add by hand — a shared process namespace, the agent's container (a native sidecar, or a
classic container that ends with the workload), its volumes — taken from a `Template` the chart
renders from the same named templates as its own pods, plus per-pod settings by annotation.

Pure: a pod (the AdmissionReview's `request.object`) in, a `Decision` out; never raises for a
pod's content (a bad annotation is left out and said, the pod is still injected)."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sentinel_sidecar.config import ConfigError, env_name, validate

PREFIX = "sentinel.sparecores.com/"
INJECT = PREFIX + "inject"  # "true": inject this pod; "false": never, whatever its namespace
INJECTED = PREFIX + "injected"  # the marker on every pod patched here
MODE = PREFIX + "mode"  # "native" or "classic", else the cluster's default
SECRET = PREFIX + "secret-name"  # the Secret holding the Sentinel API token (key `token`)
# Per-pod settings: annotation name -> the agent's setting, validated by the setting's own rule.
SETTINGS = {
    PREFIX + "project-name": "project_name",
    PREFIX + "job-name": "job_name",
    PREFIX + "tags": "tags",
    PREFIX + "interval": "interval",
}
EXCLUDED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


@dataclass(frozen=True)
class Template:
    """What is added: the agent's container in each mode and its volumes (made by the chart)."""

    native: dict[str, Any]  # an init container with `restartPolicy: Always`
    classic: dict[str, Any]  # a regular container that ends with the workload
    volumes: list[dict[str, Any]]
    native_by_default: bool = True  # the cluster has native sidecars (Kubernetes >= 1.29)

    @property
    def container_name(self) -> str:
        return str(self.native["name"])

    def volume_names(self) -> set[str]:
        return {str(volume["name"]) for volume in self.volumes}


@dataclass(frozen=True)
class Decision:
    """The patch (None: the pod is admitted as it is) and why; `warnings` name each annotation
    that was left out."""

    patch: list[dict[str, Any]] | None
    reason: str
    warnings: list[str] = field(default_factory=list)


def decide(
    pod: Mapping[str, Any],
    namespace: str,
    template: Template,
    *,
    namespace_opted_in: bool,
    own_namespace: str,
) -> Decision:
    """Whether `pod` (in `namespace`) gets the agent, and the patch that adds it."""
    metadata = pod.get("metadata") or {}
    annotations: Mapping[str, str] = metadata.get("annotations") or {}
    spec = pod.get("spec") or {}
    asked = str(annotations.get(INJECT, "")).strip().lower()
    skip = _why_not(asked, namespace, spec, annotations, template, namespace_opted_in,
                    own_namespace)  # fmt: skip
    if skip is not None:
        return Decision(None, skip)
    warnings: list[str] = []
    env = _setting_env(annotations, warnings)
    native = _native(annotations.get(MODE), template, warnings)
    container = copy.deepcopy(template.native if native else template.classic)
    given = {item["name"] for item in env}  # an annotation wins over the template's value
    container["env"] = [item for item in container.get("env", []) if item["name"] not in given]
    container["env"] += env
    secret = annotations.get(SECRET)
    if secret is not None:
        container["env"] = _with_token_secret(container["env"], secret)
    for item in container["env"]:  # a Secret missing in the pod's namespace must not stop it
        reference = (item.get("valueFrom") or {}).get("secretKeyRef")
        if reference is not None:
            reference["optional"] = True
    patch = [
        _add_map_entry(metadata, "/metadata/annotations", "annotations", INJECTED, "true"),
        {"op": "add", "path": "/spec/shareProcessNamespace", "value": True},
        *_append(spec, "volumes", copy.deepcopy(template.volumes)),
    ]
    if native:  # first, so it also measures the init containers after it
        patch += _append(spec, "initContainers", [container], first=True)
    else:
        patch += _append(spec, "containers", [container])
    return Decision(patch, f"injected ({'native' if native else 'classic'} sidecar)", warnings)


def _why_not(
    asked: str,
    namespace: str,
    spec: Mapping[str, Any],
    annotations: Mapping[str, str],
    template: Template,
    namespace_opted_in: bool,
    own_namespace: str,
) -> str | None:
    if asked == "false":
        return f"opted out ({INJECT}: false)"
    if asked != "true" and not namespace_opted_in:
        return "not opted in"
    if namespace == own_namespace or namespace in EXCLUDED_NAMESPACES:
        return f"namespace {namespace} is never injected"
    if INJECTED in annotations:
        return f"already injected ({INJECTED})"
    if spec.get("hostPID"):
        return "hostPID pod: the agent would see the whole node's processes"
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    if any(c.get("name") == template.container_name for c in containers):
        return f"a container is already named {template.container_name}"
    taken = template.volume_names() & {v.get("name") for v in spec.get("volumes", [])}
    if taken:
        return f"volume names already in use: {', '.join(sorted(taken))}"
    return None


def _setting_env(annotations: Mapping[str, str], warnings: list[str]) -> list[dict[str, str]]:
    """The agent's environment variables for the valid setting annotations."""
    env = []
    for annotation, setting in SETTINGS.items():
        if annotation not in annotations:
            continue
        value = str(annotations[annotation])
        try:
            validate(setting, value, f"annotation {annotation}")
        except ConfigError as exc:
            warnings.append(str(exc))
            continue
        env.append({"name": env_name(setting), "value": value})
    return env


def _native(asked: str | None, template: Template, warnings: list[str]) -> bool:
    if asked is None:
        return template.native_by_default
    if asked in ("native", "classic"):
        return asked == "native"
    warnings.append(f"annotation {MODE}: {asked!r} is not native or classic; the default is used")
    return template.native_by_default


def _with_token_secret(env: list[dict[str, Any]], secret: str) -> list[dict[str, Any]]:
    """`env` with the token read from `secret` (key `token`, optional: no Secret, local mode)."""
    reference = {"name": secret, "key": "token", "optional": True}
    token = {"name": "SENTINEL_API_TOKEN", "valueFrom": {"secretKeyRef": reference}}
    replaced = ("SENTINEL_API_TOKEN", "SENTINEL_API_TOKEN_FILE")
    return [token, *(item for item in env if item["name"] not in replaced)]


def _add_map_entry(
    parent: Mapping[str, Any], path: str, member: str, key: str, value: str
) -> dict[str, Any]:
    """One `add` of `key: value` to the map `member` of `parent`, creating the map if absent."""
    if parent.get(member):
        return {"op": "add", "path": f"{path}/{_escaped(key)}", "value": value}
    return {"op": "add", "path": path, "value": {key: value}}


def _append(
    spec: Mapping[str, Any], member: str, items: list[Any], *, first: bool = False
) -> list[dict[str, Any]]:
    """`add` operations putting `items` at the end (or the start) of the list `member` of the
    pod spec, creating the list if absent."""
    if not spec.get(member):
        return [{"op": "add", "path": f"/spec/{member}", "value": items}]
    where = "0" if first else "-"
    return [{"op": "add", "path": f"/spec/{member}/{where}", "value": item} for item in items]


def _escaped(key: str) -> str:
    """A JSON Pointer reference token (RFC 6901)."""
    return key.replace("~", "~0").replace("/", "~1")
