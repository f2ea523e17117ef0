"""What the Kubernetes API says of the own pod (job, workload image, UID, requests and limits)
and, with RBAC `get` on nodes, of its node (region, zone, instance type, cloud)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sentinel_sidecar.identity.cloud import CloudFacts, provider_facts
from sentinel_sidecar.identity.kube import KubeApi, KubeError
from sentinel_sidecar.identity.record import ContainerResources, parse_resources

if TYPE_CHECKING:
    from sentinel_sidecar.config import PodEnv, Settings
    from sentinel_sidecar.identity.record import Identity

log = structlog.get_logger(__name__)

_REGION = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
_ZONE = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
_INSTANCE_TYPE = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")


def node_facts(node: Mapping[str, Any]) -> CloudFacts:
    """Cloud facts from a Node object: its topology labels, else its providerID."""
    labels = node.get("metadata", {}).get("labels") or {}

    def label(names: tuple[str, ...]) -> str | None:
        return next((str(labels[name]) for name in names if labels.get(name)), None)

    facts = provider_facts(str(node.get("spec", {}).get("providerID") or ""))
    facts["cloud_region_id"] = label(_REGION) or facts.get("cloud_region_id")
    facts["cloud_zone_id"] = label(_ZONE) or facts.get("cloud_zone_id")
    facts["cloud_instance_type"] = label(_INSTANCE_TYPE)
    return facts


def pod_facts(pod: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Run metadata from the own Pod object: job, workload image, UID, namespace and name."""
    metadata = pod.get("metadata", {})
    labels = metadata.get("labels") or {}
    owners = metadata.get("ownerReferences") or []
    job = next((owner.get("name") for owner in owners if owner.get("kind") == "Job"), None)
    job = job or labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    workload = _workload_container(pod, settings)
    tags = {"namespace": metadata.get("namespace"), "pod": metadata.get("name")}
    return {
        "orchestrator": "kubernetes",
        "external_run_id": metadata.get("uid"),
        "job_name": job,
        "container_image": workload.get("image") if workload else None,
        "tags": {key: str(value) for key, value in tags.items() if value},
    }


def downward_facts(pod: PodEnv) -> dict[str, Any]:
    """What a pod knows of itself without asking the API (none of it outside a pod): it runs on
    Kubernetes, and its namespace and name when the Downward API variables are set."""
    if not pod.in_pod:
        return {}
    tags = {"namespace": pod.namespace, "pod": pod.name}
    return {
        "orchestrator": "kubernetes",
        "tags": {key: value for key, value in tags.items() if value},
    }


def _workload_container(pod: Mapping[str, Any], settings: Settings) -> dict[str, Any] | None:
    """The workload's container spec: the one named by the settings, else the first other
    than the agent's own."""
    containers = pod.get("spec", {}).get("containers") or []
    wanted = settings.k8s_workload_container
    return next(
        (
            container
            for container in containers
            if (container.get("name") == wanted)
            or (wanted is None and container.get("name") != settings.k8s_container_name)
        ),
        None,
    )


def container_resources(pod: Mapping[str, Any], settings: Settings) -> ContainerResources:
    """The workload container's requests and limits in the own Pod object, as set."""
    return parse_resources((_workload_container(pod, settings) or {}).get("resources"))


def kubernetes(identity: Identity, settings: Settings, account_dir: Path, timeout: float) -> None:
    """Offer what the own pod and (with RBAC `get` on nodes) its node say; quiet outside a
    cluster, one warning when the API refuses."""
    try:
        api = KubeApi(settings.pod, account_dir)
    except KubeError:
        return  # not in a cluster
    try:
        pod = api.get(api.pod_path, timeout)
        identity.offer("pod", pod_facts(pod, settings))
        identity.resources = container_resources(pod, settings)
    except KubeError as exc:
        log.warning("identity_pod_unavailable", error=str(exc))
    if settings.cloud_detect and api.node_name:
        try:
            identity.offer("node", node_facts(api.get(f"/api/v1/nodes/{api.node_name}", timeout)))
        except KubeError as exc:
            log.info("identity_node_unavailable", error=str(exc),
                     hint="grant `get` on nodes (rbac.nodeReader) for cloud facts")  # fmt: skip
