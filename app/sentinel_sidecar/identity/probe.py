"""What ran where: the run metadata, `host_*` and `cloud_*` facts sent when a run is registered
and kept in `run.json`. The first answer wins, and what the user set always wins: settings >
the pod and node objects of the Kubernetes API > the cloud's metadata service. Nothing probed
is ever fatal, and the whole probe is bounded in time."""

from __future__ import annotations

import http.client
import json
import os
import platform
import queue
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from sentinel_sidecar.config import CLOUD_FIELDS, Settings
from sentinel_sidecar.deadline import Call
from sentinel_sidecar.identity.kube import SERVICE_ACCOUNT_DIR, KubeApi, KubeError

log = structlog.get_logger(__name__)

PROBE_SECONDS = 2.0  # the whole probe: Kubernetes API and metadata services
CALL_SECONDS = 0.8  # one request to a metadata service
HOST_IDENTITY = ("host_id", "host_hostname", "host_ip")


@dataclass
class Identity:
    """Field values and where each came from (`settings`, `pod`, `node`, `aws-imds`, ...)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def offer(self, source: str, values: Mapping[str, Any]) -> None:
        """Take each value that is set and not known yet: the first answer wins (for `tags`,
        key by key)."""
        for name, value in values.items():
            if value in (None, "", {}):
                continue
            if name not in self.values:
                self.values[name] = value
                self.sources[name] = source
            elif isinstance(value, dict) and isinstance(self.values[name], dict):
                self.values[name] = {**value, **self.values[name]}
                if self.sources[name] != source:
                    self.sources[name] = f"{self.sources[name]}+{source}"

    def record(self) -> dict[str, dict[str, Any]]:
        """`{"value": ..., "source": ...}` per field, for `run.json`: values stay data."""
        return {
            name: {"value": value, "source": self.sources[name]}
            for name, value in self.values.items()
            if name != "container_resources"  # run.json keeps it apart, as `resources`
        }

    def described(self) -> dict[str, str]:
        """`value (source)` per field, for the `identity` log line."""
        return {name: f"{self.values[name]} ({self.sources[name]})" for name in self.values}


# --- host facts -------------------------------------------------------------------------------


def host_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    """The `host_*` fields: pod/host name, node name, vCPUs, memory, CPU model, storage. No
    probing; a fact that cannot be read is left out (a broken /proc must not stop the run)."""
    import psutil  # here, once per run: the sampling path does not need its ~1 MiB of imports

    try:
        vcpus: int | None = psutil.cpu_count(logical=True)
        memory_mib: int | None = round(psutil.virtual_memory().total / 1024 / 1024)
    except (OSError, ValueError, ArithmeticError, psutil.Error) as exc:
        log.warning("host_facts_unreadable", error=str(exc))
        vcpus = memory_mib = None
    try:
        disk = os.statvfs("/")
        storage_gb: float | None = round(disk.f_blocks * disk.f_frsize / 1e9, 1)
    except OSError:
        storage_gb = None
    return {
        "host_id": environ.get("NODE_NAME"),
        "host_hostname": environ.get("POD_NAME") or socket.gethostname(),
        "host_ip": environ.get("HOST_IP") or environ.get("POD_IP"),
        "host_vcpus": vcpus,
        "host_cpu_model": _cpu_model(),
        "host_memory_mib": memory_mib,
        "host_storage_gb": storage_gb,
        # A pod shares its node with others unless something says otherwise.
        "host_server_allocation": "shared" if environ.get("KUBERNETES_SERVICE_HOST") else None,
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


# --- Kubernetes: the own pod and its node -------------------------------------------------------

_REGION = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")
_ZONE = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
_INSTANCE_TYPE = ("node.kubernetes.io/instance-type", "beta.kubernetes.io/instance-type")
_ALIBABA = re.compile(r"^[a-z]{2}-[a-z0-9-]+\.i-[a-z0-9]+$")  # ACK: <region>.<instance id>


def provider_facts(provider_id: str) -> dict[str, str]:
    """`spec.providerID` of a node as Spare Cores vendor id and, where it carries one, the
    account (`gce://project/zone/name`, `azure:///subscriptions/<id>/...`) and zone."""
    scheme, _, rest = provider_id.partition("://")
    parts = [part for part in rest.split("/") if part]
    if scheme == "aws":
        return {"cloud_vendor_id": "aws", "cloud_zone_id": parts[0] if len(parts) > 1 else ""}
    if scheme == "gce":
        facts = {"cloud_vendor_id": "gcp"}
        if len(parts) == 3:
            facts |= {"cloud_account_id": parts[0], "cloud_zone_id": parts[1]}
        return facts
    if scheme == "azure":
        facts = {"cloud_vendor_id": "azure"}
        if len(parts) > 1 and parts[0].lower() == "subscriptions":
            facts["cloud_account_id"] = parts[1]
        return facts
    vendors = {"hcloud": "hcloud", "upcloud": "upcloud", "vultr": "vultr", "alicloud": "alicloud"}
    if scheme in vendors:
        return {"cloud_vendor_id": vendors[scheme]}
    if "://" not in provider_id and _ALIBABA.match(provider_id):
        return {"cloud_vendor_id": "alicloud", "cloud_region_id": provider_id.split(".")[0]}
    return {}


def node_facts(node: Mapping[str, Any]) -> dict[str, str]:
    """Cloud facts from a Node object: its topology labels and its providerID."""
    labels = node.get("metadata", {}).get("labels") or {}

    def label(names: tuple[str, ...]) -> str | None:
        return next((labels[name] for name in names if labels.get(name)), None)

    facts: dict[str, str] = {
        "cloud_region_id": label(_REGION) or "",
        "cloud_zone_id": label(_ZONE) or "",
        "cloud_instance_type": label(_INSTANCE_TYPE) or "",
    }
    provided = provider_facts(str(node.get("spec", {}).get("providerID") or ""))
    for name, value in provided.items():
        if value and not facts.get(name):
            facts[name] = value
    return {name: value for name, value in facts.items() if value}


def pod_facts(pod: Mapping[str, Any], settings: Settings) -> dict[str, Any]:
    """Run metadata from the own Pod object: job, workload image, UID, namespace and name."""
    metadata = pod.get("metadata", {})
    labels = metadata.get("labels") or {}
    owners = metadata.get("ownerReferences") or []
    job = next((owner.get("name") for owner in owners if owner.get("kind") == "Job"), None)
    job = job or labels.get("batch.kubernetes.io/job-name") or labels.get("job-name")
    containers = pod.get("spec", {}).get("containers") or []
    wanted = settings.k8s_workload_container
    workload = next(
        (
            container
            for container in containers
            if (container.get("name") == wanted)
            or (wanted is None and container.get("name") != settings.k8s_container_name)
        ),
        None,
    )
    tags = {"namespace": metadata.get("namespace"), "pod": metadata.get("name")}
    resources = (workload or {}).get("resources") or {}
    return {
        "orchestrator": "kubernetes",
        "external_run_id": metadata.get("uid"),
        "job_name": job,
        "container_image": workload.get("image") if workload else None,
        "tags": {key: str(value) for key, value in tags.items() if value},
        # The workload container's requests and limits as set: `report` shows them beside
        # its recommendation. Not sent to the API.
        "container_resources": {
            key: resources[key] for key in ("requests", "limits") if resources.get(key)
        },
    }


def kubernetes(
    identity: Identity, settings: Settings, environ: Mapping[str, str], account_dir: Path,
    timeout: float,
) -> None:  # fmt: skip
    """Offer what the own pod and (with RBAC `get` on nodes) its node say; quiet outside a
    cluster, one warning when the API refuses."""
    try:
        api = KubeApi(environ, account_dir)
    except KubeError:
        return  # not in a cluster
    try:
        identity.offer("pod", pod_facts(api.get(api.pod_path, timeout), settings))
    except KubeError as exc:
        log.warning("identity_pod_unavailable", error=str(exc))
    if settings.cloud_detect and api.node_name:
        try:
            identity.offer("node", node_facts(api.get(f"/api/v1/nodes/{api.node_name}", timeout)))
        except KubeError as exc:
            log.info("identity_node_unavailable", error=str(exc),
                     hint="grant `get` on nodes (rbac.nodeReader) for cloud facts")  # fmt: skip


# --- cloud metadata services --------------------------------------------------------------------


class _Http:
    """Plain HTTP to the link-local metadata address with `http.client` (the health server has
    it loaded already; `requests` would add ~10 MiB to every agent for five small calls)."""

    def __init__(self, base_url: str) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self._host = parsed.hostname or "169.254.169.254"
        self._port = parsed.port or 80

    def call(self, method: str, path: str, headers: Mapping[str, str] | None = None
             ) -> tuple[int, Mapping[str, str], bytes]:  # fmt: skip
        """Status, headers and body; OSError (refused, timeout) when no answer."""
        connection = http.client.HTTPConnection(self._host, self._port, timeout=CALL_SECONDS)
        try:
            connection.request(method, path, headers=dict(headers or {}))
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read(1 << 20)
        except http.client.HTTPException as exc:
            raise OSError(str(exc)) from exc
        finally:
            connection.close()

    def json(self, path: str, headers: Mapping[str, str] | None = None) -> Any:
        status, _headers, body = self.call("GET", path, headers)
        if status != 200:
            raise ValueError(f"HTTP {status}")
        return json.loads(body)


def _aws(http: _Http) -> dict[str, str]:
    status, _headers, token = http.call("PUT", "/latest/api/token",
                                        {"X-aws-ec2-metadata-token-ttl-seconds": "60"})  # fmt: skip
    if status != 200:
        raise ValueError(f"HTTP {status}")
    data = http.json("/latest/dynamic/instance-identity/document",
                     {"X-aws-ec2-metadata-token": token.decode()})  # fmt: skip
    return {"cloud_vendor_id": "aws", "cloud_account_id": data.get("accountId"),
            "cloud_region_id": data.get("region"), "cloud_zone_id": data.get("availabilityZone"),
            "cloud_instance_type": data.get("instanceType")}  # fmt: skip


def _gcp(http: _Http) -> dict[str, str]:
    status, headers, body = http.call("GET", "/computeMetadata/v1/?recursive=true",
                                      {"Metadata-Flavor": "Google"})  # fmt: skip
    if status != 200 or headers.get("Metadata-Flavor") != "Google":
        raise ValueError("not a GCP metadata server")
    data = json.loads(body)
    instance = data.get("instance", {})
    zone = str(instance.get("zone", "")).rsplit("/", 1)[-1]
    machine_type = str(instance.get("machineType", "")).rsplit("/", 1)[-1]
    return {"cloud_vendor_id": "gcp", "cloud_account_id": data.get("project", {}).get("projectId"),
            "cloud_region_id": zone.rsplit("-", 1)[0] if zone else None, "cloud_zone_id": zone,
            "cloud_instance_type": machine_type}  # fmt: skip


def _azure(http: _Http) -> dict[str, str]:
    compute = http.json("/metadata/instance?api-version=2021-02-01", {"Metadata": "true"})
    compute = compute.get("compute", {})
    zone = compute.get("zone")
    return {"cloud_vendor_id": "azure", "cloud_account_id": compute.get("subscriptionId"),
            "cloud_region_id": compute.get("location"),
            "cloud_zone_id": f"{compute.get('location')}-{zone}" if zone else None,
            "cloud_instance_type": compute.get("vmSize")}  # fmt: skip


def _hetzner(http: _Http) -> dict[str, str]:
    status, _headers, body = http.call("GET", "/hetzner/v1/metadata")
    if status != 200:
        raise ValueError(f"HTTP {status}")
    fields = dict(
        line.split(":", 1)
        for line in body.decode(errors="replace").splitlines()
        if ":" in line and line[0] != " "
    )
    return {"cloud_vendor_id": "hcloud", "cloud_region_id": fields.get("region", "").strip(),
            "cloud_zone_id": fields.get("availability-zone", "").strip()}  # fmt: skip


def _upcloud(http: _Http) -> dict[str, str]:
    data = http.json("/metadata/v1.json")
    if data.get("cloud_name") != "upcloud":
        raise ValueError("not an UpCloud metadata server")
    return {"cloud_vendor_id": "upcloud", "cloud_zone_id": data.get("region")}


METADATA_SERVICES: dict[str, Callable[[_Http], dict[str, str]]] = {
    "aws-imds": _aws,
    "gcp-metadata": _gcp,
    "azure-imds": _azure,
    "hetzner-metadata": _hetzner,
    "upcloud-metadata": _upcloud,
}


def metadata_services(identity: Identity, base_url: str, timeout: float) -> None:
    """Ask every cloud's metadata service at once; the first that answers is offered."""
    http = _Http(base_url)
    answers: queue.Queue[tuple[str, dict[str, str] | None]] = queue.Queue()

    def ask(name: str, probe: Callable[[_Http], dict[str, str]]) -> None:
        try:
            answers.put((name, probe(http)))
        except (OSError, ValueError, AttributeError, TypeError):
            answers.put((name, None))  # not this cloud (404, refused, not JSON)

    for name, probe in METADATA_SERVICES.items():
        threading.Thread(target=ask, args=(name, probe), name=name, daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in METADATA_SERVICES:
        try:
            name, facts = answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return
        if facts is not None:
            identity.offer(name, facts)
            return


# --- all of it ----------------------------------------------------------------------------------


def gather(
    settings: Settings,
    environ: Mapping[str, str],
    account_dir: Path = SERVICE_ACCOUNT_DIR,
    gpu_facts: Mapping[str, Any] | None = None,
) -> Identity:
    """Settings first, then the pod and node, then a metadata service (when the node told no
    cloud), then the host (and its GPUs, `gpu_facts`); each within PROBE_SECONDS in all."""
    started = time.monotonic()
    identity = Identity()
    identity.offer("settings", {**settings.metadata(), **settings.cloud()})
    kubernetes(identity, settings, environ, account_dir, timeout=PROBE_SECONDS / 2)
    if settings.cloud_detect and "cloud_vendor_id" not in identity.values:
        left = PROBE_SECONDS - (time.monotonic() - started)
        if left > 0:
            metadata_services(identity, settings.cloud_metadata_url, left)
    host = host_fields(environ)
    if not settings.send_host_identity:
        host = {name: value for name, value in host.items() if name not in HOST_IDENTITY}
    identity.offer("host", {**host, **(gpu_facts or {})})
    identity.offer("env", {"external_run_id": environ.get("POD_UID")})
    log.info("identity", took_s=round(time.monotonic() - started, 2), **identity.described())
    return identity


class IdentityProbe:
    """`gather` in the background from the start: sampling never waits for it, and a register
    or run.json that needs it waits at most until its own deadline."""

    def __init__(
        self,
        settings: Settings,
        environ: Mapping[str, str] | None = None,
        gpu_facts: Mapping[str, Any] | None = None,
    ) -> None:
        environ = dict(os.environ if environ is None else environ)
        self._settings = settings
        self._environ = environ
        self._call: Call[Identity] = Call(
            lambda: gather(settings, environ, gpu_facts=gpu_facts), what="identity"
        )

    def result(self, timeout: float) -> Identity:
        """The identity, waiting up to `timeout` s; the settings alone (and the pod UID) when
        the probe failed or is not done by then."""
        if self._call.wait(timeout):
            try:
                return self._call.result()
            except Exception as exc:  # a probe must never cost the run
                log.warning("identity_probe_failed", error=str(exc))
        else:
            log.warning("identity_probe_late", waited_s=round(timeout, 1))
        identity = Identity()
        identity.offer("settings", {**self._settings.metadata(), **self._settings.cloud()})
        identity.offer("env", {"external_run_id": self._environ.get("POD_UID")})
        return identity


def register_body(identity: Identity) -> dict[str, Any]:
    """The flat `POST /runs` body: no nulls, no pid, `tags` an object of strings.

    `external_run_id` defaults to the pod's UID: a register retried after a lost answer may
    create a second run, and the UID tells them apart."""
    allowed = set(_REGISTER_FIELDS)
    return {name: value for name, value in identity.values.items() if name in allowed}


_REGISTER_FIELDS = (
    "project_name", "job_name", "stage_name", "task_name", "team", "env", "language",
    "orchestrator", "executor", "external_run_id", "container_image", "command", "tags",
    "host_id", "host_hostname", "host_ip", "host_server_allocation", "host_vcpus",
    "host_cpu_model", "host_memory_mib", "host_gpu_model", "host_gpu_count",
    "host_gpu_memory_mib", "host_storage_gb", *CLOUD_FIELDS,
)  # fmt: skip


def run_name(environ: Mapping[str, str] | None = None) -> str:
    """The pod's name (Downward API `POD_NAME`), else the host name: names direct-S3 runs."""
    environ = os.environ if environ is None else environ
    return environ.get("POD_NAME") or socket.gethostname()
