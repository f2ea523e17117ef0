"""What is sent about the run and where it ran: settings > the own pod and node (in-cluster API
over TLS on 127.0.0.1) > the cloud's metadata service (loopback servers as strict as AWS IMDSv2,
GCP and Azure about their headers), within the probe's time bound."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest

from sentinel_sidecar.config import PodEnv, Settings
from sentinel_sidecar.delivery.sentinel_api import register_body
from sentinel_sidecar.identity.cloud import provider_facts
from sentinel_sidecar.identity.probe import PROBE_SECONDS, gather
from sentinel_sidecar.identity.record import Identity
from tests.support.peers import KubeApiServer, MetadataServer, _register_problem, free_port

POD_PATH = "/api/v1/namespaces/ml/pods/train-x7k2p"
NODE = "ip-10-0-1-23.ec2.internal"
NODE_PATH = f"/api/v1/nodes/{NODE}"
CLOSED = f"http://127.0.0.1:{free_port()}"  # nothing listens: every probe is refused at once


def settings(**values: Any) -> Settings:
    # cloud_detect as `load` resolves it in a pod
    return dataclasses.replace(Settings(cloud_metadata_url=CLOSED, cloud_detect=True), **values)


def probe(mine: Settings, environ: dict[str, str], account: Path) -> Identity:
    """`gather` in a pod whose environment is `environ` (read by config, as `load` does)."""
    return gather(dataclasses.replace(mine, pod=PodEnv.from_environ(environ)), account)


def job_pod() -> dict[str, Any]:
    """A Job's pod as the API returns it: the agent as a native sidecar, the workload after."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "train-x7k2p", "namespace": "ml", "uid": "5b1c9e2a-7f3d",
            "labels": {"batch.kubernetes.io/job-name": "train", "job-name": "train"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                 "uid": "0a1b", "controller": True}],
        },
        "spec": {
            "nodeName": NODE,
            "initContainers": [{"name": "sentinel-sidecar", "restartPolicy": "Always",
                                "image": "ghcr.io/sparecores/sentinel-sidecar:0.1.0"}],
            "containers": [{"name": "train", "image": "registry.example.com/ml/train:2.3.1",
                            "resources": {"requests": {"cpu": "2", "memory": "4Gi"},
                                          "limits": {"memory": "4Gi"}}}],
        },
        "status": {"phase": "Running"},
    }  # fmt: skip


NODES = {
    "eks": {
        "metadata": {"name": NODE, "labels": {
            "topology.kubernetes.io/region": "us-east-1", "topology.kubernetes.io/zone":
            "us-east-1a", "node.kubernetes.io/instance-type": "m5.xlarge",
            "eks.amazonaws.com/nodegroup": "batch", "kubernetes.io/os": "linux"}},
        "spec": {"providerID": "aws:///us-east-1a/i-0abcd1234ef567890"},
    },
    "gke": {
        "metadata": {"name": NODE, "labels": {
            "topology.kubernetes.io/region": "us-central1", "topology.kubernetes.io/zone":
            "us-central1-a", "node.kubernetes.io/instance-type": "e2-standard-4",
            "cloud.google.com/gke-nodepool": "default-pool"}},
        "spec": {"providerID": "gce://my-project-123/us-central1-a/gke-c1-default-pool-1a2b-x"},
    },
    "aks": {
        "metadata": {"name": NODE, "labels": {
            "topology.kubernetes.io/region": "eastus", "topology.kubernetes.io/zone": "eastus-1",
            "node.kubernetes.io/instance-type": "Standard_D4s_v3",
            "kubernetes.azure.com/agentpool": "nodepool1"}},
        "spec": {"providerID": "azure:///subscriptions/0b1c2d3e-aaaa-bbbb-cccc-0123456789ab/"
                 "resourceGroups/mc_rg_aks_eastus/providers/Microsoft.Compute/"
                 "virtualMachineScaleSets/aks-nodepool1-123-vmss/virtualMachines/0"},
    },
}  # fmt: skip

EXPECTED = {
    "eks": {"cloud_vendor_id": "aws", "cloud_region_id": "us-east-1",
            "cloud_zone_id": "us-east-1a", "cloud_instance_type": "m5.xlarge"},
    "gke": {"cloud_vendor_id": "gcp", "cloud_account_id": "my-project-123",
            "cloud_region_id": "us-central1", "cloud_zone_id": "us-central1-a",
            "cloud_instance_type": "e2-standard-4"},
    "aks": {"cloud_vendor_id": "azure", "cloud_account_id": "0b1c2d3e-aaaa-bbbb-cccc-0123456789ab",
            "cloud_region_id": "eastus", "cloud_zone_id": "eastus-1",
            "cloud_instance_type": "Standard_D4s_v3"},
}  # fmt: skip


def in_cluster(api: KubeApiServer, node: dict[str, Any] | None = None) -> dict[str, str]:
    api.objects[POD_PATH] = (200, job_pod())
    if node is not None:
        api.objects[NODE_PATH] = (200, node)
    return api.environ(NODE_NAME=NODE, POD_UID="5b1c9e2a-7f3d")


@pytest.mark.parametrize("cloud", NODES)
def test_a_node_tells_the_cloud_and_the_pod_tells_the_run(api, account: Path, cloud: str):
    environ = in_cluster(api, NODES[cloud])
    identity = probe(settings(project_name="nightly"), environ, account)
    body = register_body(identity.values)
    print(f"register body on a simulated {cloud.upper()} node: {json.dumps(body)}")
    assert _register_problem(body) is None  # the strict server takes it
    assert {name: body[name] for name in EXPECTED[cloud]} == EXPECTED[cloud]
    assert {identity.sources[name] for name in EXPECTED[cloud]} == {"node"}
    assert body["orchestrator"] == "kubernetes" and body["job_name"] == "train"
    assert body["container_image"] == "registry.example.com/ml/train:2.3.1"
    assert body["external_run_id"] == "5b1c9e2a-7f3d" and body["project_name"] == "nightly"
    assert body["tags"] == {"namespace": "ml", "pod": "train-x7k2p"}
    assert body["host_server_allocation"] == "shared" and body["host_storage_gb"] > 0
    # the workload's requests and limits for `report`, not for the API
    assert identity.resources["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert "container_resources" not in body
    assert api.seen[0] == (POD_PATH, "Bearer sa-token")


def test_settings_win_over_the_node_and_user_tags_win_key_by_key(api, account: Path):
    environ = in_cluster(api, NODES["eks"])
    mine = settings(cloud_region_id="us-east-2", tags={"pod": "mine", "team": "ml"},
                    job_name="nightly-train", orchestrator="argo")  # fmt: skip
    identity = probe(mine, environ, account)
    body = register_body(identity.values)
    assert (
        body["cloud_region_id"] == "us-east-2" and identity.sources["cloud_region_id"] == "settings"
    )
    assert body["cloud_zone_id"] == "us-east-1a"  # what the user did not set still comes
    assert body["job_name"] == "nightly-train" and body["orchestrator"] == "argo"
    assert body["tags"] == {"namespace": "ml", "pod": "mine", "team": "ml"}


AWS_DOCUMENT = {"accountId": "123456789012", "architecture": "x86_64",
                "availabilityZone": "eu-west-1b", "imageId": "ami-0abc", "instanceId": "i-0123",
                "instanceType": "c6i.large", "privateIp": "10.0.1.23", "region": "eu-west-1",
                "version": "2017-09-30"}  # fmt: skip
GCP_DOCUMENT = {"instance": {"zone": "projects/123456789/zones/europe-west4-a",
                             "machineType": "projects/123456789/machineTypes/n2-standard-8",
                             "hostname": "vm-1.c.my-proj.internal"},
                "project": {"projectId": "my-proj", "numericProjectId": 123456789}}  # fmt: skip
AZURE_DOCUMENT = {"compute": {"location": "westeurope", "vmSize": "Standard_D2s_v3",
                              "subscriptionId": "8f7e6d5c-0000-1111-2222-333344445555",
                              "zone": "2", "osType": "Linux"}}  # fmt: skip
METADATA: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "aws": (AWS_DOCUMENT, {"cloud_vendor_id": "aws", "cloud_account_id": "123456789012",
                           "cloud_region_id": "eu-west-1", "cloud_zone_id": "eu-west-1b",
                           "cloud_instance_type": "c6i.large"}),
    "gcp": (GCP_DOCUMENT, {"cloud_vendor_id": "gcp", "cloud_account_id": "my-proj",
                           "cloud_region_id": "europe-west4", "cloud_zone_id": "europe-west4-a",
                           "cloud_instance_type": "n2-standard-8"}),
    "azure": (AZURE_DOCUMENT, {"cloud_vendor_id": "azure",
                               "cloud_account_id": "8f7e6d5c-0000-1111-2222-333344445555",
                               "cloud_region_id": "westeurope", "cloud_zone_id": "westeurope-2",
                               "cloud_instance_type": "Standard_D2s_v3"}),
}  # fmt: skip


@pytest.mark.parametrize("cloud", METADATA)
def test_outside_a_cluster_the_metadata_service_answers(cloud: str, tmp_path: Path):
    document, expected = METADATA[cloud]
    server = MetadataServer(cloud, document)
    try:
        identity = probe(settings(cloud_metadata_url=server.url), {}, tmp_path)
    finally:
        server.close()
    body = register_body(identity.values)
    assert {name: body.get(name) for name in expected} == expected
    assert (
        identity.sources["cloud_vendor_id"] == f"{cloud}-{'metadata' if cloud == 'gcp' else 'imds'}"
    )
    assert "host_server_allocation" not in body  # not known to be shared outside a pod


def test_a_node_rbac_refuses_falls_back_to_the_metadata_service(api, account: Path):
    environ = in_cluster(api)
    api.objects[NODE_PATH] = (403, {"kind": "Status", "reason": "Forbidden", "code": 403})
    server = MetadataServer("aws", AWS_DOCUMENT)
    try:
        identity = probe(settings(cloud_metadata_url=server.url), environ, account)
    finally:
        server.close()
    assert identity.values["cloud_region_id"] == "eu-west-1"
    assert identity.sources["cloud_region_id"] == "aws-imds"
    assert identity.values["job_name"] == "train"  # the pod still answered


def test_without_rbac_the_downward_api_still_names_kubernetes_the_namespace_and_the_pod(
    api, account: Path
):
    environ = in_cluster(api)
    api.objects[POD_PATH] = (403, {"kind": "Status", "reason": "Forbidden", "code": 403})
    identity = probe(settings(cloud_detect=False), environ, account)
    body = register_body(identity.values)
    assert _register_problem(body) is None  # the strict server takes it
    assert body["orchestrator"] == "kubernetes"
    assert body["tags"] == {"namespace": "ml", "pod": "train-x7k2p"}
    assert identity.sources["orchestrator"] == "downward-api"
    assert "job_name" not in body  # only the API knows the Job


def test_the_metadata_service_is_not_asked_when_the_node_answered(api, account: Path):
    environ = in_cluster(api, NODES["gke"])
    server = MetadataServer("aws", AWS_DOCUMENT)
    try:
        identity = probe(settings(cloud_metadata_url=server.url), environ, account)
    finally:
        server.close()
    assert identity.values["cloud_vendor_id"] == "gcp" and server.requests == []


def test_the_probe_is_bounded_when_every_peer_hangs(api, account: Path):
    environ = in_cluster(api)
    api.hang = {POD_PATH, NODE_PATH}
    server = MetadataServer("aws", AWS_DOCUMENT)
    server.hang = "blackhole"
    try:
        started = time.monotonic()
        identity = probe(settings(cloud_metadata_url=server.url, team="ml"), environ, account)
        took = time.monotonic() - started
    finally:
        server.close()
    print(f"probe with every peer hanging: {took:.2f} s")
    assert took <= PROBE_SECONDS + 1.0
    assert identity.values["team"] == "ml" and "cloud_vendor_id" not in identity.values


def test_detection_off_asks_nobody_and_host_identity_can_be_withheld(api, account: Path):
    environ = in_cluster(api, NODES["eks"])
    server = MetadataServer("aws", AWS_DOCUMENT)
    try:
        quiet = settings(cloud_metadata_url=server.url, cloud_detect=False,
                         send_host_identity=False)  # fmt: skip
        identity = probe(quiet, {**environ, "NODE_NAME": NODE, "POD_IP": "10.1.2.3"}, account)
    finally:
        server.close()
    assert server.requests == [] and NODE_PATH not in [path for path, _ in api.seen]
    assert not any(name.startswith("cloud_") for name in identity.values)
    assert not {"host_id", "host_hostname", "host_ip"} & set(identity.values)
    assert identity.values["job_name"] == "train"  # the own pod is still read


@pytest.mark.parametrize(
    ("provider_id", "expected"),
    [
        ("aws:///eu-west-1c/i-0abc", {"cloud_vendor_id": "aws", "cloud_zone_id": "eu-west-1c"}),
        ("gce://p1/europe-west1-b/n1", {"cloud_vendor_id": "gcp", "cloud_account_id": "p1",
                                        "cloud_zone_id": "europe-west1-b"}),
        ("hcloud://12345678", {"cloud_vendor_id": "hcloud"}),
        ("upcloud:////00a1b2c3-d4e5", {"cloud_vendor_id": "upcloud"}),
        ("vultr://6b1c2d3e", {"cloud_vendor_id": "vultr"}),
        ("cn-hangzhou.i-bp1abcdefg", {"cloud_vendor_id": "alicloud",
                                      "cloud_region_id": "cn-hangzhou"}),
        ("kind://docker/kind/kind-control-plane", {}),
    ],
)  # fmt: skip
def test_provider_ids_name_the_vendor(provider_id: str, expected: dict[str, str]):
    assert provider_facts(provider_id) == expected


def test_register_body_is_flat_without_nulls_or_pid(tmp_path: Path):
    mine = settings(project_name="p", team="ml", cloud_vendor_id="aws", cloud_detect=False)
    body = register_body(probe(mine, {"NODE_NAME": "n1", "POD_NAME": "pod-1"}, tmp_path).values)
    assert body["project_name"] == "p" and body["team"] == "ml"
    assert body["host_id"] == "n1" and body["host_hostname"] == "pod-1"
    assert body["cloud_vendor_id"] == "aws"
    assert "pid" not in body and None not in body.values()
    assert "cloud_region_id" not in body and "host_ip" not in body
    assert "external_run_id" not in body  # no pod UID outside a pod


def test_register_body_tags_are_an_object_and_the_pod_uid_names_the_run(tmp_path: Path):
    mine = settings(tags={"team": "ml", "stage": "train"}, command='["python", "t.py"]',
                    cloud_detect=False)  # fmt: skip
    body = register_body(probe(mine, {"POD_UID": "0b5e-uid"}, tmp_path).values)
    assert body["tags"] == {"team": "ml", "stage": "train"}
    assert body["external_run_id"] == "0b5e-uid"
    assert body["command"] == '["python", "t.py"]'
    yours = register_body(probe(settings(external_run_id="mine", cloud_detect=False),
                                {"POD_UID": "0b5e-uid"}, tmp_path).values)  # fmt: skip
    assert yours["external_run_id"] == "mine"
