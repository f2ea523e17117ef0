"""The Grafana dashboard in k8s/grafana: it imports as it is (its data source is a variable),
every query parses as PromQL (promtool) and names only series the agent exports."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from sentinel_sidecar.delivery.destination import DestinationStatus
from sentinel_sidecar.exposition import Exposition
from sentinel_sidecar.identity.record import Identity
from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from sentinel_sidecar.readiness import Probe
from sentinel_sidecar.telemetry import Telemetry
from tests.support.tools import require

DASHBOARD = (
    Path(__file__).resolve().parents[2] / "k8s" / "grafana" / "sentinel-sidecar-dashboard.json"
)
SERIES = re.compile(r"\b(sentinel_[a-z_]+)\b")


def exported_series() -> set[str]:
    """Every series name the agent can export: a workload on a GPU, a pod with resources."""
    telemetry = Telemetry()
    row = dict.fromkeys(SENTINEL_COLUMNS, "1")
    telemetry.usage.add([row[name] for name in SENTINEL_COLUMNS])
    identity = Identity()
    identity.offer("pod", {"job_name": "train", "tags": {"namespace": "ml", "pod": "train-1"}})
    identity.resources = {"requests": {"cpu": "500m", "memory": "1Gi"},
                          "limits": {"cpu": "2", "memory": "2Gi"}}  # fmt: skip
    probe = Probe(telemetry, 1, 60, lambda: 0, lambda: DestinationStatus(True, 100.0),
                  identity=lambda: identity)  # fmt: skip
    body, _ = Exposition(probe).render("")
    return {
        sample.name
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_imports_as_it_is():
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    sources = [panel["datasource"] for panel in dashboard["panels"]]
    sources += [t["datasource"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert all(source == {"type": "prometheus", "uid": "${datasource}"} for source in sources)
    assert "__inputs" not in dashboard  # no data source to pick by hand on import
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert {"CPU (cores)", "Memory", "Disk IO", "GPU"} <= titles


def test_every_query_names_series_the_agent_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_series()
    named = {name for expr in queries(dashboard) for name in SERIES.findall(expr)}
    variables = [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    named |= {name for text in variables for name in SERIES.findall(text)}
    assert named, "no query names a series"
    assert named <= exported, f"not exported: {sorted(named - exported)}"
    for needed in ("request", "limit"):  # memory and CPU against the pod's requests and limits
        assert any(needed in name for name in named)


def test_every_query_is_promql_that_prometheus_accepts(tmp_path: Path):
    promtool = require("promtool", "Debian's prometheus package; .ci/run installs it")
    dashboard = json.loads(DASHBOARD.read_text())
    # Grafana's variables, as Grafana fills them in
    filled = [expr.replace("$__rate_interval", "1m").replace("$namespace", ".*")
              .replace("$pod", ".*") for expr in queries(dashboard)]  # fmt: skip
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{index}", "expr": expr} for index, expr in enumerate(filled)
    ]}]}  # fmt: skip
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"promtool check rules: {len(filled)} dashboard queries: {done.stdout.strip()}")
