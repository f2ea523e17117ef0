"""What every pod with the agent must carry, checked the same way for the plain manifests and
for what the chart renders; strict validation against the supported Kubernetes versions."""

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSIONS = ("1.29.0", "1.31.0")
SHUTDOWN_TIMEOUT = 20


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_all(docs: list[dict[str, Any]]) -> None:
    assert docs
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def validate_custom(doc: dict[str, Any], crd_path: Path) -> None:
    """`doc` against the CustomResourceDefinition at `crd_path`, as strictly as the API server
    would take it: the schema of the document's version (types, enums, required fields) and no
    field the schema does not name (the API server would prune it without a word)."""
    crd = yaml.safe_load(crd_path.read_text())
    assert doc["kind"] == crd["spec"]["names"]["kind"]
    group, _, version = doc["apiVersion"].partition("/")
    assert group == crd["spec"]["group"]
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = served["schema"]["openAPIV3Schema"]
    jsonschema.Draft7Validator(schema).validate(doc)
    unknown = list(_unknown_fields(doc, schema, doc["kind"]))
    assert not unknown, f"fields the CRD does not know (pruned on apply): {unknown}"


def _unknown_fields(value: Any, schema: dict[str, Any], where: str) -> Any:
    if isinstance(value, dict):
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        known = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if known is not None and key in known:
                yield from _unknown_fields(item, known[key], f"{where}.{key}")
            elif isinstance(extra, dict):
                yield from _unknown_fields(item, extra, f"{where}.{key}")
            elif known is not None:  # an object the schema spells out: only its fields
                yield f"{where}.{key}"
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], f"{where}[{index}]")


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    assert job["kind"] == "Job"
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def sidecar_of(spec: dict[str, Any], native: bool) -> dict[str, Any]:
    place = "initContainers" if native else "containers"
    [sidecar] = [c for c in spec.get(place, []) if c["name"] == "sentinel-sidecar"]
    found: dict[str, Any] = sidecar
    return found


def check_sidecar_pod(spec: dict[str, Any], native: bool) -> dict[str, Any]:
    """What every pod with the agent must have; returns the agent's env as a dict."""
    sidecar = sidecar_of(spec, native)
    assert spec["shareProcessNamespace"] is True
    assert spec["terminationGracePeriodSeconds"] >= SHUTDOWN_TIMEOUT + 5
    assert (sidecar.get("restartPolicy") == "Always") is native
    context = sidecar["securityContext"]
    assert context["runAsNonRoot"] is True and context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sidecar["resources"]["requests"] and sidecar["resources"]["limits"]
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/readyz"
    mounts = {m["mountPath"]: m["name"] for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/sentinel-sidecar"]]
    assert "/tmp" in mounts
    env = {e["name"]: e for e in sidecar["env"]}
    for name, path in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace"),
                       ("NODE_NAME", "spec.nodeName")):  # fmt: skip
        assert env[name]["valueFrom"]["fieldRef"]["fieldPath"] == path
    return env
