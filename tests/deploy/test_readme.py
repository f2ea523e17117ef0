"""The README a newcomer follows: its snippet is a valid pod spec, and every link and table of
contents entry leads somewhere in the repository (that the demo prints what it shows is checked
with the demo, in test_local_mode.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support.manifests import validate_all

ROOT = Path(__file__).resolve().parent.parent.parent
README = (ROOT / "README.md").read_text()


def test_the_add_to_your_job_snippet_is_a_valid_pod_spec():
    block = README[README.index("<!-- add-to-your-job -->") :]
    snippet = block[block.index("```yaml\n") + 8 : block.index("```\n<!-- /add-to-your-job -->")]
    patch: dict[str, Any] = yaml.safe_load(snippet)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "my-job"},
           "spec": {"template": {"spec": {"restartPolicy": "Never", **patch, "containers": [
               {"name": "my-job", "image": "python:3.11-slim"}]}}}}  # fmt: skip
    validate_all([job])
    [sidecar] = patch["initContainers"]
    assert patch["shareProcessNamespace"] is True and sidecar["restartPolicy"] == "Always"
    env = {item["name"]: item for item in sidecar["env"]}
    assert env["SENTINEL_API_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_link_leads_to_a_file_in_the_repository():
    for page in markdown_files():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            assert "://" not in target, f"{page.name} links outside the repository: {target}"
            assert (page.parent / target).exists(), f"{page.name}: {target} does not exist"


def test_the_table_of_contents_names_real_sections():
    def anchor(heading: str) -> str:
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    anchors = {anchor(line[3:]) for line in README.splitlines() if line.startswith("## ")}
    contents = README[README.index("## Contents") : README.index("## Quick start")]
    for target in re.findall(r"\]\(#([^)]+)\)", contents):
        assert target in anchors, target
