"""`sentinel-sidecar inject`, the real CLI over TLS on 127.0.0.1 (a certificate made with openssl
here), fed real AdmissionReview JSON; every patch applied with a JSONPatch library and the pod
it makes validated strictly for Kubernetes 1.29 and 1.31. Hostile requests answer 4xx (the API
server then admits the pod by `failurePolicy: Ignore`) and never stop the server."""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import requests
import yaml

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from tests.support import pod as simulated
from tests.support.agent import (
    agent_env,
    chunk_rows,
    dir_chunks,
    log_events,
    start_agent,
    wait_until,
)
from tests.support.helm import render
from tests.support.manifests import validate_all
from tests.support.peers import free_port
from tests.support.pod import PRELUDE, SHAPES

CHART = Path(__file__).resolve().parents[2] / "k8s" / "helm" / "sentinel-sidecar"
OWN_NAMESPACE = "sentinel-system"


def certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def chart_template(home: Path) -> dict[str, Any]:
    """The injection template as the chart's own pods have the agent (native and classic)."""

    def example(mode: str) -> dict[str, Any]:
        docs = render("helm4-sdk", CHART, {"exampleJob": {"enabled": True}, "sidecarMode": mode},
                      name="rel", namespace="ml", home=home)  # fmt: skip
        [job] = [doc for doc in docs if doc["kind"] == "Job"]
        spec: dict[str, Any] = job["spec"]["template"]["spec"]
        return spec

    native, classic = example("native"), example("classic")
    [agent_native] = [c for c in native["initContainers"] if c["name"] == "sentinel-sidecar"]
    [agent_classic] = [c for c in classic["containers"] if c["name"] == "sentinel-sidecar"]
    return {"native": agent_native, "classic": agent_classic, "volumes": native["volumes"],
            "nativeByDefault": True}  # fmt: skip


class Injector:
    """The real `inject` command on 127.0.0.1."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(exist_ok=True)
        self.cert, self.key = certificate(directory, "serving")
        self.ca = directory / "ca.crt"
        self.ca.write_bytes(self.cert.read_bytes())
        template = directory / "template.yaml"
        template.write_text(yaml.safe_dump(chart_template(directory / "helm")))
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.process = start_agent(
            ["inject", "--port", str(self.port), "--tls-cert", str(self.cert), "--tls-key",
             str(self.key), "--template", str(template), "--namespace", OWN_NAMESPACE,
             "--max-concurrency", "4"]
        )  # fmt: skip
        wait_until(self.healthy, 20, "the injector's /healthz")

    def healthy(self) -> bool:
        try:
            return requests.get(self.url + "/healthz", verify=str(self.ca), timeout=2).ok
        except requests.RequestException:
            return False

    def review(self, pod: dict[str, Any], namespace: str = "ml", path: str = "/mutate",
               **request: Any) -> dict[str, Any]:  # fmt: skip
        body = admission_review(pod, namespace, **request)
        answer = requests.post(self.url + path, json=body, verify=str(self.ca), timeout=10)
        assert answer.status_code == 200, answer.text
        review: dict[str, Any] = answer.json()
        assert review["apiVersion"] == "admission.k8s.io/v1"
        assert review["kind"] == "AdmissionReview"
        assert review["response"]["uid"] == body["request"]["uid"]
        assert review["response"]["allowed"] is True
        return review

    def metrics(self) -> str:
        return requests.get(self.url + "/metrics", verify=str(self.ca), timeout=5).text

    def counter(self, series: str) -> float:
        """The value of `series` (name and labels as printed) on /metrics; 0 before its first."""
        for line in self.metrics().splitlines():
            name, _, value = line.rpartition(" ")
            if name == series:
                return float(value)
        return 0.0

    def stop(self) -> str:
        self.process.terminate()
        _out, err = self.process.communicate(timeout=20)
        assert self.process.returncode == 0, err
        return err


@pytest.fixture(scope="module")
def injector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Injector]:
    server = Injector(tmp_path_factory.mktemp("inject"))
    yield server
    server.stop()


def admission_review(pod: dict[str, Any], namespace: str, **request: Any) -> dict[str, Any]:
    """What the API server sends for a pod's creation (admission.k8s.io/v1)."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:job-controller"},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
            **request,
        },
    }


def job_pod(**annotations: str) -> dict[str, Any]:
    """A Job controller's pod as the API server hands it to a webhook (defaults applied)."""
    # fmt: off
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "train-",
            "namespace": "ml",
            "labels": {"batch.kubernetes.io/job-name": "train", "job-name": "train"},
            "annotations": dict(annotations),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "train",
                                 "uid": "4b5f", "controller": True,
                                 "blockOwnerDeletion": True}],
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "train", "image": "python:3.11-slim",
                "command": ["python", "-c", "print(1)"],
                "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent",
                "volumeMounts": [{"name": "kube-api-access-x", "readOnly": True,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
            }],
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}}],
            "dnsPolicy": "ClusterFirst",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
        },
    }
    # fmt: on


def cronjob_pod() -> dict[str, Any]:
    pod = job_pod(**{"sentinel.sparecores.com/inject": "true"})
    pod["metadata"]["generateName"] = "nightly-29000000-"
    pod["metadata"]["ownerReferences"][0]["name"] = "nightly-29000000"
    return pod


def deployment_pod() -> dict[str, Any]:
    pod = job_pod(**{"sentinel.sparecores.com/inject": "true"})
    pod["metadata"]["generateName"] = "api-5d4f9c7b8-"
    pod["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                           "name": "api-5d4f9c7b8", "uid": "9a1c",
                                           "controller": True}]  # fmt: skip
    pod["spec"]["restartPolicy"] = "Always"
    return pod


def patched(pod: dict[str, Any], review: dict[str, Any]) -> dict[str, Any]:
    """The pod after the review's JSONPatch, as the API server would store it."""
    response = review["response"]
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(copy.deepcopy(pod), patch)
    return result


def stored(pod: dict[str, Any]) -> dict[str, Any]:
    """`pod` as validation sees a created object: a name instead of generateName."""
    pod = copy.deepcopy(pod)
    pod["metadata"]["name"] = pod["metadata"].pop("generateName") + "x7k2p"
    return pod


def agent(pod: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    spec = pod["spec"]
    for place in ("initContainers", "containers"):
        for container in spec.get(place, []):
            if container["name"] == "sentinel-sidecar":
                return place, container
    raise AssertionError("no agent in the pod")


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


@pytest.mark.parametrize("make", [cronjob_pod, deployment_pod], ids=["cronjob", "deployment"])
def test_an_annotated_pod_gets_the_agent_and_stays_a_valid_pod(injector: Injector, make):
    pod = make()
    result = patched(pod, injector.review(pod))
    validate_all([stored(result)])
    place, container = agent(result)
    assert place == "initContainers" and container["restartPolicy"] == "Always"


def test_a_jobs_pod_in_an_opted_in_namespace_gets_the_native_sidecar(injector: Injector):
    pod = job_pod()
    review = injector.review(pod, path="/mutate/namespace")
    patch = json.loads(base64.b64decode(review["response"]["patch"]))
    print("AdmissionReview answer for a Job's pod, its patch decoded:")
    print(json.dumps({**review["response"], "patch": patch}, indent=1)[:3000])
    result = patched(pod, review)
    validate_all([stored(result)])
    print("kubernetes-validate --strict, 1.29 and 1.31: valid")
    spec = result["spec"]
    assert spec["shareProcessNamespace"] is True
    assert result["metadata"]["annotations"]["sentinel.sparecores.com/injected"] == "true"
    place, container = agent(result)
    assert place == "initContainers" and spec["initContainers"][0] is container
    assert {v["name"] for v in spec["volumes"]} >= {"sentinel-spool", "sentinel-tmp",
                                                   "kube-api-access-x"}  # fmt: skip
    env = env_of(container)
    assert {"POD_NAME", "POD_NAMESPACE", "NODE_NAME", "POD_UID"} <= set(env)
    assert container["ports"] == [{"name": "sentinel-health", "containerPort": 8080}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["containers"][0]["name"] == "train"  # the workload untouched


def test_annotations_set_the_mode_and_settings_and_a_bad_one_is_left_out_with_a_warning(
    injector: Injector,
):
    pod = job_pod(**{"sentinel.sparecores.com/inject": "true",
                     "sentinel.sparecores.com/mode": "classic",
                     "sentinel.sparecores.com/project-name": "nightly",
                     "sentinel.sparecores.com/tags": "team=ml,stage=train",
                     "sentinel.sparecores.com/interval": "-3",
                     "sentinel.sparecores.com/secret-name": "sentinel-api"})  # fmt: skip
    review = injector.review(pod)
    result = patched(pod, review)
    validate_all([stored(result)])
    place, container = agent(result)
    assert place == "containers" and "restartPolicy" not in container
    env = env_of(container)
    assert env["TRACKER_PROJECT_NAME"] == "nightly"
    assert env["TRACKER_TAGS"] == "team=ml,stage=train"
    assert env["TRACKER_INTERVAL"] == "1"  # the chart's: -3 refused by the setting's own rule
    names = [item["name"] for item in container["env"]]
    assert len(names) == len(set(names))  # an annotation replaces, never repeats
    assert env["SENTINEL_API_TOKEN"] == {
        "secretKeyRef": {"name": "sentinel-api", "key": "token", "optional": True}
    }
    [warning] = review["response"]["warnings"]
    assert "interval" in warning and "sentinel.sparecores.com/interval" in warning


@pytest.mark.parametrize(
    ("pod", "namespace", "path"),
    [
        (job_pod(), "ml", "/mutate"),  # not opted in
        (job_pod(**{"sentinel.sparecores.com/inject": "false"}), "ml", "/mutate/namespace"),
        (job_pod(**{"sentinel.sparecores.com/inject": "true"}), OWN_NAMESPACE, "/mutate"),
        (job_pod(**{"sentinel.sparecores.com/inject": "true"}), "kube-system", "/mutate"),
        (job_pod(**{"sentinel.sparecores.com/inject": "true",
                    "sentinel.sparecores.com/injected": "true"}), "ml", "/mutate"),
    ],
    ids=["not-opted-in", "opted-out", "own-namespace", "kube-system", "already-injected"],
)  # fmt: skip
def test_pods_that_must_not_be_injected_are_admitted_as_they_are(
    injector: Injector, pod, namespace, path
):
    review = injector.review(pod, namespace, path)
    assert "patch" not in review["response"]


def test_a_pod_patched_once_is_not_patched_again(injector: Injector):
    pod = job_pod(**{"sentinel.sparecores.com/inject": "true"})
    once = patched(pod, injector.review(pod))
    assert "patch" not in injector.review(once)["response"]  # reinvocation: nothing more


@pytest.mark.parametrize("clash", ["hostPID", "container", "volume"])
def test_pods_the_agent_would_clash_with_are_skipped(injector: Injector, clash: str):
    pod = job_pod(**{"sentinel.sparecores.com/inject": "true"})
    if clash == "hostPID":
        pod["spec"]["hostPID"] = True
    elif clash == "container":
        pod["spec"]["containers"].append({"name": "sentinel-sidecar", "image": "x"})
    else:
        pod["spec"]["volumes"].append({"name": "sentinel-spool", "emptyDir": {}})
    assert "patch" not in injector.review(pod)["response"]


def test_hostile_requests_get_4xx_and_the_server_goes_on(injector: Injector):
    url, ca = injector.url + "/mutate", str(injector.ca)
    assert requests.post(url, data=b"{not json", verify=ca, timeout=5).status_code == 400
    wrong = admission_review(job_pod(), "ml")
    wrong["apiVersion"] = "admission.k8s.io/v1beta1"
    assert requests.post(url, json=wrong, verify=ca, timeout=5).status_code == 400
    no_uid = admission_review(job_pod(), "ml")
    del no_uid["request"]["uid"]
    assert requests.post(url, json=no_uid, verify=ca, timeout=5).status_code == 400
    huge = b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    try:
        status = requests.post(url, data=huge, verify=ca, timeout=10).status_code
    except requests.ConnectionError:
        status = 413  # closed before the whole body was sent: refused unread
    assert status == 413
    # A slow client: TLS done, then half a request line, then nothing.
    context = ssl.create_default_context(cafile=ca)
    started = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", injector.port), timeout=20)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as slow:
        slow.sendall(b"POST /mutate HTTP/1.1\r\nHost: x\r\n")
        meanwhile = injector.review(job_pod())  # others are answered meanwhile
        assert slow.recv(1024) == b""  # closed by the server
    waited = time.monotonic() - started
    assert waited < 10
    assert "patch" not in meanwhile["response"]
    refused = "sentinel_inject_requests_refused_total"
    assert injector.counter(refused + '{reason="not_a_review"}') == 3
    assert injector.counter(refused + '{reason="too_large"}') == 1
    print(f"slow client cut off after {waited:.1f} s")


def test_a_pod_the_decision_cannot_read_is_admitted_as_it_is_and_counted(injector: Injector):
    pod = job_pod(**{"sentinel.sparecores.com/inject": "true"})
    pod["spec"]["containers"] = "not a list"  # the decision fails on it
    errors = 'sentinel_inject_reviews_total{result="error"}'
    before = injector.counter(errors)
    review = injector.review(pod)
    assert "patch" not in review["response"]
    assert injector.counter(errors) == before + 1


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path):
    server = Injector(tmp_path / "rotate")
    try:
        first = ssl.get_server_certificate(("127.0.0.1", server.port))
        new_cert, new_key = certificate(tmp_path, "rotated")
        # As a Secret's update does it: new files swapped in.
        new_key.replace(server.key)
        new_cert.replace(server.cert)
        wait_until(lambda: ssl.get_server_certificate(("127.0.0.1", server.port)) != first, 10,
                   "the new certificate served")  # fmt: skip
    finally:
        err = server.stop()
    assert "tls_reloaded" in err


def test_bad_flags_exit_2_naming_the_flag(tmp_path: Path):
    cert, key = certificate(tmp_path, "serving")
    template = tmp_path / "template.yaml"
    template.write_text("native: {name: a}\n")
    done = start_agent(["inject", "--tls-cert", str(cert), "--tls-key", str(key), "--template",
                        str(template)])  # fmt: skip
    _out, err = done.communicate(timeout=30)
    assert done.returncode == 2 and "--template" in err


def test_more_requests_than_its_slots_are_closed_at_once_and_counted(injector: Injector):
    context = ssl.create_default_context(cafile=str(injector.ca))
    held = []
    try:
        for _ in range(4):  # --max-concurrency 4: every slot taken by a client that stalls
            raw = socket.create_connection(("127.0.0.1", injector.port), timeout=20)
            slow = context.wrap_socket(raw, server_hostname="127.0.0.1")
            slow.sendall(b"POST /mutate HTTP/1.1\r\n")
            held.append(slow)
        started = time.monotonic()
        with pytest.raises(requests.ConnectionError):
            injector.review(job_pod())
        assert time.monotonic() - started < 2  # refused at once, not queued
    finally:
        for connection in held:
            connection.close()
    wait_until(lambda: injector.healthy(), 10, "slots free again")
    assert injector.counter('sentinel_inject_requests_refused_total{reason="busy"}') >= 1


FIELD_VALUES = {"metadata.name": "train-x7k2p", "metadata.namespace": "ml",
                "spec.nodeName": "node-1", "metadata.uid": "5b1c9e2a-7f3d"}  # fmt: skip


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment the kubelet gives `container` here: values as written, the Downward
    API's fields of this pod, no Secret (the optional token Secret does not exist)."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif "fieldRef" in item.get("valueFrom", {}):
            env[item["name"]] = FIELD_VALUES[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@pytest.mark.skipif(simulated.available() is not None, reason=str(simulated.available()))
def test_the_injected_agent_measures_the_workload_in_a_simulated_pod(
    injector: Injector, pod: simulated.Pod, tmp_path: Path
):
    job = job_pod(**{"sentinel.sparecores.com/inject": "true"})
    _place, container = agent(patched(job, injector.review(job)))
    assert container["restartPolicy"] == "Always"  # native: the kubelet stops it after the Job
    output = tmp_path / "output"
    # The container's own args and env; the paths and port of this host instead of the pod's.
    args = [*container["args"], "--spool-dir", str(tmp_path / "spool"), "--output-dir",
            str(output), "--health-port", "0", "--interval", "0.25",
            "--log-format", "json"]  # fmt: skip
    sidecar_pid, log = pod.start_sidecar(args, agent_env(container_env(container)))
    sidecar = pod.last_shim
    wait_until(lambda: b'"measuring"' in log.read_bytes(), 20, "the agent's first reading")
    workload = pod.container("workload")
    pod.start(workload, [sys.executable, "-c", PRELUDE + SHAPES["short_children"]])
    assert pod.last_shim.wait(60) == 0
    os.kill(sidecar_pid, signal.SIGTERM)  # as the kubelet ends a native sidecar
    assert sidecar.wait(30) == 0, log.read_text()
    rows = [dict(zip(SENTINEL_COLUMNS, row.rstrip("\n").split(","), strict=True))
            for row in chunk_rows(dir_chunks(output))]  # fmt: skip
    cpu = sum(float(r["process_utime"] or 0) + float(r["process_stime"] or 0) for r in rows)
    truth = workload.cpu_seconds()
    print(f"injected agent in a simulated pod: {len(rows)} rows, CPU {cpu:.3f} s of "
          f"{truth:.3f} s ({cpu / truth - 1:+.1%}), exit 0 on SIGTERM")  # fmt: skip
    assert abs(cpu / truth - 1) <= 0.03
    [stopped] = [e for e in log_events(log.read_text()) if e["event"] == "stop_requested"]
    assert stopped["signal"] == "SIGTERM"


def test_a_client_that_trickles_its_request_is_cut_off_within_the_request_time(
    injector: Injector,
):
    # One byte a second never trips a per-read timeout: only a bound on the whole request does.
    context = ssl.create_default_context(cafile=str(injector.ca))
    raw = socket.create_connection(("127.0.0.1", injector.port), timeout=20)
    started = time.monotonic()
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as slow:
        slow.sendall(b"POST /mutate HTTP/1.1\r\n")
        try:
            for byte in b"X-Slow: " + b"a" * 30:
                slow.sendall(bytes([byte]))
                time.sleep(1)
        except OSError:
            pass  # cut off while sending
        slow.settimeout(10)
        with contextlib.suppress(ConnectionResetError, ssl.SSLError):  # cut off: a reset
            assert slow.recv(1024) == b""
    waited = time.monotonic() - started
    assert waited < 8, f"a trickling client held a slot for {waited:.1f} s"
