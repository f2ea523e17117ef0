"""The clouds the agent knows, one entry each: its Spare Cores vendor id, how a node's
`spec.providerID` names it (and what it carries: account, zone), and its metadata service's
probe. A new cloud is one `Cloud` in `CLOUDS`."""

from __future__ import annotations

import json
import queue
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from sentinel_sidecar.identity.record import Identity

CALL_SECONDS = 0.8  # one request to a metadata service


class CloudFacts(TypedDict, total=False):
    """The `cloud_*` fields of the register body, as a cloud tells them (None: not told)."""

    cloud_vendor_id: str | None
    cloud_account_id: str | None
    cloud_region_id: str | None
    cloud_zone_id: str | None
    cloud_instance_type: str | None


class _Http:
    """Plain HTTP to the link-local metadata address with `http.client` (`requests` would add
    ~10 MiB to every agent for five small calls), imported on the first call: only an agent
    on a cloud machine asks (http.client and the email parser it loads: ~5 ms of start-up)."""

    def __init__(self, base_url: str) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        self._host = parsed.hostname or "169.254.169.254"
        self._port = parsed.port or 80

    def call(self, method: str, path: str, headers: Mapping[str, str] | None = None
             ) -> tuple[int, Mapping[str, str], bytes]:  # fmt: skip
        """Status, headers and body; OSError (refused, timeout) when no answer."""
        import http.client

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


def _aws_provider(parts: list[str]) -> CloudFacts:
    return {"cloud_zone_id": parts[0]} if len(parts) > 1 else {}  # aws:///<zone>/<instance>


def _gcp_provider(parts: list[str]) -> CloudFacts:
    if len(parts) == 3:  # gce://<project>/<zone>/<name>
        return {"cloud_account_id": parts[0], "cloud_zone_id": parts[1]}
    return {}


def _azure_provider(parts: list[str]) -> CloudFacts:
    if len(parts) > 1 and parts[0].lower() == "subscriptions":  # azure:///subscriptions/<id>/...
        return {"cloud_account_id": parts[1]}
    return {}


def _aws_metadata(http: _Http) -> CloudFacts:
    status, _headers, token = http.call("PUT", "/latest/api/token",
                                        {"X-aws-ec2-metadata-token-ttl-seconds": "60"})  # fmt: skip
    if status != 200:
        raise ValueError(f"HTTP {status}")
    data = http.json("/latest/dynamic/instance-identity/document",
                     {"X-aws-ec2-metadata-token": token.decode()})  # fmt: skip
    return {"cloud_vendor_id": "aws", "cloud_account_id": data.get("accountId"),
            "cloud_region_id": data.get("region"), "cloud_zone_id": data.get("availabilityZone"),
            "cloud_instance_type": data.get("instanceType")}  # fmt: skip


def _gcp_metadata(http: _Http) -> CloudFacts:
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


def _azure_metadata(http: _Http) -> CloudFacts:
    compute = http.json("/metadata/instance?api-version=2021-02-01", {"Metadata": "true"})
    compute = compute.get("compute", {})
    zone = compute.get("zone")
    return {"cloud_vendor_id": "azure", "cloud_account_id": compute.get("subscriptionId"),
            "cloud_region_id": compute.get("location"),
            "cloud_zone_id": f"{compute.get('location')}-{zone}" if zone else None,
            "cloud_instance_type": compute.get("vmSize")}  # fmt: skip


def _hetzner_metadata(http: _Http) -> CloudFacts:
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


def _upcloud_metadata(http: _Http) -> CloudFacts:
    data = http.json("/metadata/v1.json")
    if data.get("cloud_name") != "upcloud":
        raise ValueError("not an UpCloud metadata server")
    return {"cloud_vendor_id": "upcloud", "cloud_zone_id": data.get("region")}


@dataclass(frozen=True, eq=False)
class Cloud:
    """One cloud: its vendor id, the providerID scheme and parser, its metadata probe."""

    vendor_id: str
    scheme: str  # of `spec.providerID`
    provider: Callable[[list[str]], CloudFacts] = lambda parts: CloudFacts()
    metadata_name: str = ""  # the source name of its metadata service's answers
    metadata: Callable[[_Http], CloudFacts] | None = None


CLOUDS = (
    Cloud("aws", "aws", _aws_provider, "aws-imds", _aws_metadata),
    Cloud("gcp", "gce", _gcp_provider, "gcp-metadata", _gcp_metadata),
    Cloud("azure", "azure", _azure_provider, "azure-imds", _azure_metadata),
    Cloud("hcloud", "hcloud", metadata_name="hetzner-metadata", metadata=_hetzner_metadata),
    Cloud("upcloud", "upcloud", metadata_name="upcloud-metadata", metadata=_upcloud_metadata),
    Cloud("vultr", "vultr"),
    Cloud("alicloud", "alicloud"),
)
_ALIBABA = re.compile(r"^[a-z]{2}-[a-z0-9-]+\.i-[a-z0-9]+$")  # ACK: <region>.<instance id>


def provider_facts(provider_id: str) -> CloudFacts:
    """`spec.providerID` of a node as Spare Cores vendor id and, where it carries one, the
    account (`gce://project/zone/name`, `azure:///subscriptions/<id>/...`) and zone."""
    scheme, _, rest = provider_id.partition("://")
    parts = [part for part in rest.split("/") if part]
    for cloud in CLOUDS:
        if scheme == cloud.scheme:
            return {"cloud_vendor_id": cloud.vendor_id, **cloud.provider(parts)}
    if "://" not in provider_id and _ALIBABA.match(provider_id):
        return {"cloud_vendor_id": "alicloud", "cloud_region_id": provider_id.split(".")[0]}
    return {}


def metadata_services(identity: Identity, base_url: str, timeout: float) -> None:
    """Ask every cloud's metadata service at once; the first that answers is offered."""
    http = _Http(base_url)
    answers: queue.Queue[tuple[str, CloudFacts | None]] = queue.Queue()

    def ask(name: str, probe: Callable[[_Http], CloudFacts]) -> None:
        try:
            answers.put((name, probe(http)))
        except (OSError, ValueError, AttributeError, TypeError):
            answers.put((name, None))  # not this cloud (404, refused, not JSON)

    services = [(cloud.metadata_name, cloud.metadata) for cloud in CLOUDS if cloud.metadata]
    for name, probe in services:
        threading.Thread(target=ask, args=(name, probe), name=name, daemon=True).start()
    deadline = time.monotonic() + timeout
    for _ in services:
        try:
            name, facts = answers.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return
        if facts is not None:
            identity.offer(name, facts)
            return
