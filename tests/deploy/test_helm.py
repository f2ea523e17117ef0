"""The Helm chart, rendered by Helm 4 (its Go SDK) and by a real Helm 3 binary: as a chart, as a
subchart of a parent chart, and installed (client dry run) against a Kubernetes API on
127.0.0.1 that serves discovery over TLS."""

import argparse
import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

import sentinel_sidecar
from sentinel_sidecar import config
from sentinel_sidecar.inject.template import load_template
from tests.support import helm
from tests.support.helm import ENGINES, RenderError
from tests.support.manifests import (
    check_sidecar_pod,
    documents,
    pod_spec,
    sidecar_of,
    validate_all,
    validate_custom,
)
from tests.support.peers import KubeApiServer

ROOT = Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "k8s"
CHART = K8S / "helm" / "sentinel-sidecar"


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def render(engine: str, tmp_path: Path):
    def render(values: dict[str, Any], name: str = "rel") -> list[dict[str, Any]]:
        return helm.render(engine, CHART, values, name=name, namespace="ml", home=tmp_path / "h")

    return render


def test_chart_lints_strict(tmp_path: Path):
    report = helm_python.lint(CHART, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    for values in ({}, {"exampleJob": {"enabled": True}}, {"sidecarMode": "classic"},
                   {"injector": {"enabled": True}}):  # fmt: skip
        (tmp_path / "values.json").write_text(json.dumps(values))
        helm.helm3_run(["lint", "--strict", str(CHART), "-f", str(tmp_path / "values.json")],
                       tmp_path)  # fmt: skip


def test_the_readme_example_renders_with_the_charts_image_tag(render):
    # Helm 3 read `.Chart` back from YAML under another key: an empty tag, then a parse error.
    docs = render({"exampleJob": {"enabled": True}, "token": {"secretName": "sentinel-api"},
                   "metadata": {"projectName": "my-project", "tags": {"team": "ml"}}})  # fmt: skip
    validate_all(docs)
    [job] = [d for d in docs if d["kind"] == "Job"]
    sidecar = sidecar_of(pod_spec(job), True)
    assert sidecar["image"] == f"ghcr.io/sparecores/sentinel-sidecar:{sentinel_sidecar.__version__}"


def test_chart_default_values_render_rbac_only(render):
    docs = render({})
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount"]
    validate_all(docs)


VALUE_SETS: dict[str, dict[str, Any]] = {
    "native-example": {
        "exampleJob": {"enabled": True},
        "metadata": {"projectName": "p", "tags": {"team": "ml", "stage": "train"}},
    },
    "classic-extended-token-file": {
        "sidecarMode": "classic",
        "token": {"secretName": "sentinel-api", "as": "file"},
        "agent": {"schema": "extended", "interval": 0.5, "shutdownTimeout": 45},
        "exampleJob": {"enabled": True, "command": ["python", "-c", 'print("it\'s")']},
    },
    "direct-s3-no-rbac-no-health": {
        "token": {"secretName": ""},
        "s3": {"uri": "s3://bucket/runs", "region": "eu-west-1"},
        "rbac": {"create": False},
        "serviceAccount": {"create": False},  # the pod's own (e.g. IRSA) account
        "agent": {"healthPort": 0, "k8sExitCode": False},
        "exampleJob": {"enabled": True},
    },
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_value_sets_render_valid_jobs(render, name):
    values = VALUE_SETS[name]
    docs = render(values)
    validate_all(docs)
    [job] = [d for d in docs if d["kind"] == "Job"]
    spec = pod_spec(job)
    native = values.get("sidecarMode", "native") == "native"
    sidecar = sidecar_of(spec, native)
    if values.get("agent", {}).get("healthPort") == 0:
        assert "livenessProbe" not in sidecar
        return
    env = check_sidecar_pod(spec, native)
    assert env["TRACKER_EXIT_WITH_WORKLOAD"]["value"] == ("false" if native else "true")
    if name == "classic-extended-token-file":
        assert env["SENTINEL_API_TOKEN_FILE"]["value"] == "/var/run/secrets/sentinel/token"
        assert env["TRACKER_SCHEMA"]["value"] == "extended"
        assert spec["terminationGracePeriodSeconds"] == 55
    if name == "native-example":
        assert env["TRACKER_PROJECT_NAME"]["value"] == "p"
        assert json.loads(env["TRACKER_TAGS"]["value"]) == {"team": "ml", "stage": "train"}
        assert env["POD_UID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.uid"


def test_direct_s3_values_set_the_uri_and_no_token(render):
    docs = render(VALUE_SETS["direct-s3-no-rbac-no-health"])
    [job] = [d for d in docs if d["kind"] == "Job"]
    env = {e["name"]: e for e in sidecar_of(pod_spec(job), True)["env"]}
    assert env["TRACKER_S3_URI"]["value"] == "s3://bucket/runs"
    assert "SENTINEL_API_TOKEN" not in env and "serviceAccountName" not in pod_spec(job)


@pytest.mark.parametrize(
    "values",
    [
        {"agent": {"interval": -1}},
        {"agent": {"schema": "csv"}},
        {"sidecarMode": "sometimes"},
        {"s3": {"uri": "https://bucket/x"}},
        {"agent": {"healthPort": 70000}},
        {"intervall": 1},
        {"metadata": {"tags": "team=ml"}},
        {"enabled": "yes"},
        {"rbac": {"extraSubjects": [{"kind": "Robot", "name": "x"}]}},
    ],
)
def test_chart_schema_rejects_bad_values(render, values):
    with pytest.raises(RenderError, match=r"sentinel-sidecar:\n- "):  # Helm's schema report
        render(values)


def test_the_spool_volume_is_sized_from_the_agents_cap(render):
    # A spool past the emptyDir's sizeLimit gets the whole pod evicted, workload included.
    docs = render({"exampleJob": {"enabled": True}, "spool": {"maxMiB": 64, "segmentMiB": 4}})
    [job] = [d for d in docs if d["kind"] == "Job"]
    spec = pod_spec(job)
    env = {e["name"]: e["value"] for e in sidecar_of(spec, True)["env"] if "value" in e}
    settings = config.load(argparse.Namespace(), env)
    assert (settings.spool_max_bytes, settings.spool_segment_bytes) == (64 << 20, 4 << 20)
    [volume] = [v for v in spec["volumes"] if v["name"] == "sentinel-spool"]
    assert volume["emptyDir"]["sizeLimit"] == "88Mi"  # the cap, two segments and 16Mi


def test_a_spool_cap_below_eight_segments_is_refused(render):
    with pytest.raises(RenderError, match=r"spool.maxMiB \(15\) must hold at least 8 segments"):
        render({"exampleJob": {"enabled": True}, "spool": {"maxMiB": 15}})


PARENT_CHART = """apiVersion: v2
name: my-jobs
version: 1.4.2
appVersion: "9.9.9"
kubeVersion: ">=1.29.0-0"
dependencies:
  - name: sentinel-sidecar
    version: 0.1.0
    repository: file://../sentinel-sidecar
    condition: sentinel-sidecar.enabled
"""

PARENT_JOB = """apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-train
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      serviceAccountName: my-jobs
      {{- $sidecar := dict "Values" (index .Values "sentinel-sidecar") "Root" $ }}
      {{- if (index .Values "sentinel-sidecar").enabled }}
      {{- include "sentinel-sidecar.podSpecPatch" $sidecar | nindent 6 }}
      initContainers:
        - {{- include "sentinel-sidecar.container" $sidecar | nindent 10 }}
      {{- end }}
      containers:
        - name: train
          image: python:3.11-slim
          command: ["python", "-c", "print(1)"]
          {{- if (index .Values "sentinel-sidecar").enabled }}
          volumeMounts:
            {{- include "sentinel-sidecar.spoolMount" $sidecar | nindent 12 }}
          {{- end }}
      {{- if (index .Values "sentinel-sidecar").enabled }}
      volumes:
        {{- include "sentinel-sidecar.volumes" $sidecar | nindent 8 }}
      {{- end }}
"""


def render_parent(engine: str, tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart as a dependency of a parent chart whose Job includes the named templates."""
    shutil.copytree(CHART, tmp_path / "sentinel-sidecar")
    parent = tmp_path / "my-jobs"
    (parent / "templates").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(PARENT_CHART)
    (parent / "templates" / "job.yaml").write_text(PARENT_JOB)
    helm.build_dependencies(engine, parent, tmp_path / "h")
    return helm.render(engine, parent, values, name="nightly", namespace="ml", home=tmp_path / "h")


SUBCHART_VALUES: dict[str, dict[str, Any]] = {
    "global": {"imageRegistry": "registry.example.com", "storageClass": "fast"},
    "sentinel-sidecar": {
        "enabled": True,
        "serviceAccount": {"create": False},
        "rbac": {"extraSubjects": [{"name": "my-jobs"}]},
        "token": {"secretName": "sentinel-api"},
        "metadata": {"projectName": "nightly"},
    },
}


def test_the_chart_renders_as_a_subchart_with_global_values(engine: str, tmp_path: Path):
    # Helm passes `global` to every subchart, and `enabled` is the usual toggle: the schema
    # refused both; the include then rendered the parent's version as the image tag.
    docs = render_parent(engine, tmp_path, SUBCHART_VALUES)
    validate_all(docs)
    [job] = [d for d in docs if d["kind"] == "Job"]
    spec = pod_spec(job)
    sidecar = sidecar_of(spec, True)
    print("parent chart's sidecar container:\n" + yaml.safe_dump(sidecar, sort_keys=False))
    env = check_sidecar_pod(spec, True)
    assert sidecar["image"] == f"ghcr.io/sparecores/sentinel-sidecar:{sentinel_sidecar.__version__}"
    assert spec["serviceAccountName"] == "my-jobs"  # the pod's own account, left alone
    assert env["SENTINEL_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "sentinel-api"
    assert env["TRACKER_PROJECT_NAME"]["value"] == "nightly"
    kinds = {d["kind"]: d for d in docs}
    assert "ServiceAccount" not in kinds
    assert kinds["Role"]["metadata"]["name"] == "nightly-sentinel-sidecar-pod-reader"
    assert kinds["RoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "my-jobs"}]


def test_the_subchart_can_be_switched_off(engine: str, tmp_path: Path):
    values = {**SUBCHART_VALUES, "sentinel-sidecar": {"enabled": False}}
    docs = render_parent(engine, tmp_path, values)
    [job] = docs
    assert "initContainers" not in pod_spec(job) and "shareProcessNamespace" not in pod_spec(job)


@pytest.mark.parametrize("release", ["a", "b"])
def test_object_names_follow_the_release(render, release):
    names = {d["metadata"]["name"] for d in render({}, name=release)}
    assert names == {f"{release}-sentinel-sidecar", f"{release}-sentinel-sidecar-pod-reader"}


def test_the_sidecar_may_see_the_gpus_without_requesting_one(render):
    docs = render({"gpu": {"visibleToSidecar": True}, "exampleJob": {"enabled": True}})
    validate_all(docs)
    [job] = [d for d in docs if d["kind"] == "Job"]
    sidecar = sidecar_of(pod_spec(job), True)
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all" and env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"
    assert "nvidia.com/gpu" not in str(sidecar["resources"])
    [manifest] = documents((K8S / "job-gpu-native-sidecar.yaml").read_text())
    spec = pod_spec(manifest)
    check_sidecar_pod(spec, True)
    [workload] = spec["containers"]
    assert workload["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_the_node_reader_is_off_by_default_and_gets_nodes_only(render):
    assert not [d for d in render({}) if d["kind"].startswith("Cluster")]
    docs = render({"rbac": {"nodeReader": True, "extraSubjects": [{"name": "my-jobs"}]}})
    validate_all(docs)
    kinds = {d["kind"]: d for d in docs}
    assert kinds["ClusterRole"]["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}
    ]
    assert kinds["ClusterRoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "rel-sentinel-sidecar", "namespace": "ml"},
        {"kind": "ServiceAccount", "name": "my-jobs", "namespace": "ml"},
    ]
    [manifest, binding] = documents((K8S / "rbac-node-reader.yaml").read_text())
    assert manifest["rules"] == kinds["ClusterRole"]["rules"]
    assert binding["kind"] == "ClusterRoleBinding"


def test_a_network_policy_admits_only_the_scraper_to_the_health_port(render):
    assert not [d for d in render({}) if d["kind"] == "NetworkPolicy"]  # off by default
    scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    docs = render({"networkPolicy": {"enabled": True, "podLabels": {"app": "train"},
                                     "from": [scraper]}})  # fmt: skip
    validate_all(docs)
    [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["podSelector"] == {"matchLabels": {"app": "train"}}
    assert policy["spec"]["ingress"] == [
        {"ports": [{"protocol": "TCP", "port": 8080}], "from": [scraper]}
    ]
    with pytest.raises(RenderError, match="podLabels"):  # never every pod of the namespace
        render({"networkPolicy": {"enabled": True}})


def discovery(api: KubeApiServer, minor: int) -> None:
    """What Helm asks a cluster before it installs: its version and the kinds it serves."""

    def resources(group_version: str, kinds: list[tuple[str, str]]) -> dict[str, Any]:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
                "resources": [{"name": plural, "singularName": "", "namespaced": True,
                               "kind": kind, "verbs": ["create", "get", "list"]}
                              for plural, kind in kinds]}  # fmt: skip

    def group(name: str) -> dict[str, Any]:
        version = {"groupVersion": f"{name}/v1", "version": "v1"}
        return {"name": name, "versions": [version], "preferredVersion": version}

    api.objects.update({
        "/version": (200, {"major": "1", "minor": str(minor), "gitVersion": f"v1.{minor}.0"}),
        "/api": (200, {"kind": "APIVersions", "versions": ["v1"]}),
        "/apis": (200, {"kind": "APIGroupList", "apiVersion": "v1",
                        "groups": [group("batch"), group("rbac.authorization.k8s.io")]}),
        "/api/v1": (200, resources("v1", [("serviceaccounts", "ServiceAccount")])),
        "/apis/batch/v1": (200, resources("batch/v1", [("jobs", "Job")])),
        "/apis/rbac.authorization.k8s.io/v1": (200, resources(
            "rbac.authorization.k8s.io/v1", [("roles", "Role"), ("rolebindings", "RoleBinding")])),
    })  # fmt: skip


def helm3_install(api: KubeApiServer, account: Path, home: Path, *values: str) -> str:
    args = ["install", "demo", str(CHART), "--dry-run=client", "--disable-openapi-validation",
            "-n", "ml", f"--kube-apiserver=https://127.0.0.1:{api.port}",
            f"--kube-ca-file={account / 'ca.crt'}", "--kube-token=t0ken"]  # fmt: skip
    for value in values:
        args += ["--set", value]
    return helm.helm3_run(args, home)


def test_helm3_installs_the_chart_on_a_supported_cluster(api, account, tmp_path: Path):
    discovery(api, minor=29)
    out = helm3_install(api, account, tmp_path, "exampleJob.enabled=true")
    assert "STATUS: pending-install" in out
    manifest = out.split("MANIFEST:", 1)[1]
    kinds = sorted(d["kind"] for d in documents(manifest))
    assert kinds == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    paths = [path for path, _ in api.seen]
    assert "/apis/batch/v1/namespaces/ml/jobs/demo-example" in paths  # asked the cluster
    assert all(auth == "Bearer t0ken" for _, auth in api.seen)


def test_helm3_refuses_a_cluster_older_than_the_chart_supports(api, account, tmp_path: Path):
    discovery(api, minor=28)
    with pytest.raises(RenderError, match="kubeVersion"):
        helm3_install(api, account, tmp_path)


PODMONITOR_CRD = Path(__file__).parent / "crds" / "monitoring.coreos.com_podmonitors.yaml"


def test_scrape_annotations_come_with_the_pod_template_and_follow_the_health_port(render):
    [job] = [d for d in render({"exampleJob": {"enabled": True}}) if d["kind"] == "Job"]
    assert job["spec"]["template"]["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "8080",
        "prometheus.io/path": "/metrics",
    }  # fmt: skip
    for values in ({"metrics": {"scrapeAnnotations": False}}, {"agent": {"healthPort": 0}}):
        [job] = [d for d in render({"exampleJob": {"enabled": True}, **values})
                 if d["kind"] == "Job"]  # fmt: skip
        assert "annotations" not in job["spec"]["template"]["metadata"]


def test_the_pod_monitor_is_off_by_default_and_valid_against_the_operators_crd(render):
    assert not [d for d in render({}) if d["kind"] == "PodMonitor"]
    for values in (
        {},
        {"labels": {"release": "kube-prometheus-stack"}, "podLabels": {"app": "train"},
         "namespaceSelector": {"matchNames": ["ml", "batch"]}, "interval": "15s"},
    ):  # fmt: skip
        docs = render({"metrics": {"podMonitor": {"enabled": True, **values}}})
        [monitor] = [d for d in docs if d["kind"] == "PodMonitor"]
        validate_custom(monitor, PODMONITOR_CRD)
        [endpoint] = monitor["spec"]["podMetricsEndpoints"]
        assert (endpoint["port"], endpoint["path"]) == ("sentinel-health", "/metrics")
        assert monitor["spec"]["selector"] == (
            {"matchLabels": values["podLabels"]} if values else {}
        )
    # the port it scrapes is the agent's
    [job] = [d for d in render({"exampleJob": {"enabled": True}}) if d["kind"] == "Job"]
    ports = sidecar_of(pod_spec(job), True)["ports"]
    assert ports == [{"name": "sentinel-health", "containerPort": 8080}]
    with pytest.raises(RenderError, match="healthPort"):
        render({"metrics": {"podMonitor": {"enabled": True}}, "agent": {"healthPort": 0}})


def test_the_crd_check_catches_what_the_api_server_would_prune_or_refuse():
    def monitor(endpoint: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
                "metadata": {"name": "m"},
                "spec": {"selector": {}, "podMetricsEndpoints": [endpoint]}}  # fmt: skip

    with pytest.raises(AssertionError, match="intervall"):
        validate_custom(monitor({"port": "x", "intervall": "1s"}), PODMONITOR_CRD)
    with pytest.raises(jsonschema.ValidationError):  # a port's name, not its number
        validate_custom(monitor({"port": 8080}), PODMONITOR_CRD)


def _injector(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs if "injector" in d["metadata"]["name"]}


def test_the_injector_is_off_by_default_and_never_in_a_pods_way_when_on(render, tmp_path: Path):
    assert not _injector(render({}))
    docs = render({"injector": {"enabled": True}, "token": {"secretName": "sentinel-api"}})
    validate_all(docs)  # strict, 1.29 and 1.31: ConfigMap, Deployment, Service, PDB, webhook
    found = _injector(docs)
    assert set(found) == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "Secret",
                          "MutatingWebhookConfiguration"}  # fmt: skip
    webhooks = found["MutatingWebhookConfiguration"]["webhooks"]
    assert [w["name"] for w in webhooks] == ["namespace.inject.sentinel.sparecores.com",
                                            "pod.inject.sentinel.sparecores.com"]  # fmt: skip
    for webhook in webhooks:
        assert webhook["failurePolicy"] == "Ignore" and webhook["sideEffects"] == "None"
        assert webhook["timeoutSeconds"] <= 5 and webhook["reinvocationPolicy"] == "Never"
        [excluded, label] = webhook["namespaceSelector"]["matchExpressions"]
        assert excluded["operator"] == "NotIn"
        assert {"kube-system", "ml"} <= set(excluded["values"])  # ml: the release's own
        assert label["key"] == "sentinel.sparecores.com/inject"
        assert webhook["rules"] == [{"apiGroups": [""], "apiVersions": ["v1"],
                                     "operations": ["CREATE"], "resources": ["pods"],
                                     "scope": "Namespaced"}]  # fmt: skip
    assert found["Deployment"]["spec"]["replicas"] == 2
    assert found["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    # the CA in the webhook signed the serving certificate in the Secret, for the Service's name
    ca = base64.b64decode(webhooks[0]["clientConfig"]["caBundle"])
    cert = base64.b64decode(found["Secret"]["data"]["tls.crt"])
    (tmp_path / "ca.pem").write_bytes(ca)
    (tmp_path / "cert.pem").write_bytes(cert)
    verified = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.pem"),
                               str(tmp_path / "cert.pem")], capture_output=True, text=True,
                              timeout=30)  # fmt: skip
    assert verified.returncode == 0, verified.stderr
    names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                            str(tmp_path / "cert.pem")], capture_output=True, text=True,
                           timeout=30).stdout  # fmt: skip
    assert "rel-sentinel-sidecar-injector.ml.svc" in names
    # the template the injector reads is what its own loader accepts, the token read optionally
    path = tmp_path / "template.yaml"
    path.write_text(found["ConfigMap"]["data"]["template.yaml"])
    template = load_template(path)
    assert template.native["restartPolicy"] == "Always" and template.native_by_default
    assert {v["name"] for v in template.volumes} == {"sentinel-spool", "sentinel-tmp"}


def test_the_injector_with_cert_manager_asks_it_for_the_certificate(render):
    docs = render({"injector": {"enabled": True, "certManager": {"enabled": True}}})
    found = _injector(docs)
    assert "Secret" not in found
    webhook = found["MutatingWebhookConfiguration"]
    assert webhook["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "ml/rel-sentinel-sidecar-injector"
    }
    assert all("caBundle" not in w["clientConfig"] for w in webhook["webhooks"])
    certificate = found["Certificate"]
    assert certificate["apiVersion"] == "cert-manager.io/v1"
    assert certificate["spec"]["secretName"] == "rel-sentinel-sidecar-injector-tls"
    assert certificate["spec"]["dnsNames"] == ["rel-sentinel-sidecar-injector.ml.svc"]
    issuer = {"kind": "Issuer", "name": "rel-sentinel-sidecar-injector"}
    assert certificate["spec"]["issuerRef"] == issuer
    assert found["Issuer"]["spec"] == {"selfSigned": {}}
    validate_all([d for d in docs if not d["apiVersion"].startswith("cert-manager.io/")])


@pytest.mark.parametrize(
    "values",
    [{"injector": {"enabled": True, "timeoutSeconds": 10}},
     {"injector": {"enabled": True, "certManager": {"issuerKind": "Vault"}}}],
)  # fmt: skip
def test_the_injector_values_are_checked(render, values):
    with pytest.raises(RenderError, match=r"sentinel-sidecar:\n- "):
        render(values)


def test_the_injector_refuses_a_mounted_token_that_other_namespaces_lack(render):
    with pytest.raises(RenderError, match=r"token\.as env"):
        render({"injector": {"enabled": True},
                "token": {"secretName": "sentinel-api", "as": "file"}})  # fmt: skip


def test_the_injector_renders_from_a_parent_chart(engine: str, tmp_path: Path):
    values = {"sentinel-sidecar": {**SUBCHART_VALUES["sentinel-sidecar"],
                                   "injector": {"enabled": True}}}  # fmt: skip
    docs = render_parent(engine, tmp_path, values)
    validate_all(docs)
    found = _injector(docs)
    assert found["Deployment"]["metadata"]["name"] == "nightly-sentinel-sidecar-injector"
    [container] = found["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert (
        container["image"] == f"ghcr.io/sparecores/sentinel-sidecar:{sentinel_sidecar.__version__}"
    )
