"""The chart rendered by both Helm majors users run: Helm 4 through its Go SDK (helm-python-sdk)
and Helm 3 as the real `helm` binary (.ci/run installs v3.17 and sets HELM3)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python

from tests.support.manifests import documents
from tests.support.tools import missing

HELM3_ENV = "HELM3"
ENGINES = ("helm4-sdk", "helm3")


class RenderError(Exception):
    """Helm refused the chart or the values; the message is Helm's."""


def helm3() -> str:
    """The Helm 3 binary; fails in CI (where .ci/run installs it), skips elsewhere."""
    path = os.environ.get(HELM3_ENV) or shutil.which("helm")
    if path:
        version = subprocess.run(
            [path, "version", "--short"], capture_output=True, text=True, timeout=30
        ).stdout
        if version.startswith("v3."):
            return path
    missing(f"no Helm 3 binary: set {HELM3_ENV} (.ci/run fetches one with .ci/fetch-k8s-tools)")


def _environ(home: Path) -> dict[str, str]:
    # Helm writes caches and reads repositories from the user's home: keep it in the test's.
    return {**os.environ, "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"), "HELM_DATA_HOME": str(home / "data"),
            "KUBECONFIG": os.devnull}  # fmt: skip


def helm3_run(args: list[str], home: Path) -> str:
    """`helm ARGS` with a private home; RenderError with Helm's message when it fails."""
    result = subprocess.run(
        [helm3(), *args], capture_output=True, text=True, timeout=120, env=_environ(home),
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


def render(
    engine: str, chart: Path, values: dict[str, Any], *, name: str, namespace: str, home: Path
) -> list[dict[str, Any]]:
    """Every object the chart renders for `values` (schema-checked by Helm itself)."""
    if engine == "helm4-sdk":
        with helm_python.Chart.load(chart) as loaded:
            try:
                loaded.validate_schema(values)
                files = loaded.render(values, name=name, namespace=namespace)
            except helm_python.HelmError as exc:
                raise RenderError(str(exc)) from exc
        return [doc for text in files.values() for doc in documents(text)]
    values_file = home / "values.json"
    home.mkdir(parents=True, exist_ok=True)
    values_file.write_text(json.dumps(values))
    return documents(
        helm3_run(["template", name, str(chart), "-n", namespace, "-f", str(values_file)], home)
    )


def build_dependencies(engine: str, chart: Path, home: Path) -> None:
    """`helm dependency build` of a parent chart with a `file://` dependency."""
    if engine == "helm4-sdk":
        helm_python.dependency_build(chart, skip_refresh=True)
    else:
        helm3_run(["dependency", "build", "--skip-refresh", str(chart)], home)
