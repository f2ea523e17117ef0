"""`/metrics` against the real Prometheus tools: promtool's linter in every mode, OpenMetrics
when asked, the workload's totals against the spooled rows, and a Prometheus server scraping a
running agent whose query answers match the spool."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from sentinel_sidecar.measure.values import MIB
from tests.support.agent import (
    health_answers,
    run_args,
    scrape,
    sentinel_env,
    sigterm,
    spool_rows,
    start_agent,
    wait_for_rows,
    wait_until,
)
from tests.support.peers import REGION, free_port
from tests.support.tools import require

PROMETHEUS_PACKAGE = "Debian's prometheus package; .ci/run installs it"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def columns(rows: list[str]) -> list[dict[str, str]]:
    return list(csv.DictReader([",".join(SENTINEL_COLUMNS), *rows]))


def local_agent(tmp_path: Path, pid: int, interval: float, port: int) -> subprocess.Popen[str]:
    """A local-mode agent on `pid` that keeps every row in its spool (no upload during a test)."""
    return start_agent(run_args(tmp_path / "spool", "--interval", str(interval),
                                "--upload-interval", "3600", "--pid", str(pid),
                                "--health-port", str(port), output=tmp_path / "out"))  # fmt: skip


def promtool_check(text: str) -> str:
    """promtool's lint of an exposition; its output (empty when clean)."""
    promtool = require("promtool", PROMETHEUS_PACKAGE)
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def mode_env(mode: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[list[str], dict]:
    """Flags and environment of an agent in `mode`, against the tests' real peers."""
    if mode == "local":
        return ["--output-dir", str(tmp_path / "out")], {}
    moto = request.getfixturevalue("moto")
    if mode == "direct-s3":
        bucket = moto.new_bucket()
        return [], {"TRACKER_S3_URI": f"s3://{bucket}/runs", "S3_ENDPOINT_URL": moto.endpoint,
                    "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": moto.user["aws_access_key_id"],
                    "AWS_SECRET_ACCESS_KEY": moto.user["aws_secret_access_key"]}  # fmt: skip
    return [], sentinel_env(request.getfixturevalue("sentinel"), request.getfixturevalue("proxy"))


@pytest.mark.parametrize("mode", ["local", "direct-s3", "sentinel"])
def test_metrics_pass_promtool_in_every_mode_and_openmetrics_is_served_when_asked(
    tmp_path: Path, workload, request: pytest.FixtureRequest, mode: str
):
    flags, env = mode_env(mode, tmp_path, request)
    port = free_port()
    spool = tmp_path / "spool"
    args = run_args(spool, "--interval", "0.2", "--upload-interval", "1", "--pid",
                    str(workload.pid), "--health-port", str(port), *flags)  # fmt: skip
    agent = start_agent(args, env)
    try:
        wait_for_rows(spool, 10)
        wait_until(lambda: scrape(port)["sentinel_sidecar_ready"] == 1, 20, "ready")
        plain = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        open_metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5,
                                    headers={"Accept": OPENMETRICS})  # fmt: skip
    finally:
        sigterm(agent)
    assert plain.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    lint = promtool_check(plain.text)
    print(f"{mode}: promtool check metrics: exit 0 {lint.strip()!r}; a scrape:")
    print("\n".join(line for line in plain.text.splitlines() if "workload_cpu" in line))
    assert "sentinel_workload_cpu_seconds_total{" in plain.text
    assert open_metrics.headers["Content-Type"].startswith("application/openmetrics-text")
    assert open_metrics.text.endswith("# EOF\n")
    families = {family.name for family in text_string_to_metric_families(open_metrics.text)}
    assert {"sentinel_workload_cpu_seconds", "sentinel_sidecar_rows_sampled"} <= families


def test_the_workload_totals_are_the_sums_of_the_spooled_rows(tmp_path: Path, workload):
    spool, port = tmp_path / "spool", free_port()
    agent = local_agent(tmp_path, workload.pid, 0.1, port)
    try:
        wait_for_rows(spool, 30)
        series = scrape(port)
        rows = columns(spool_rows(spool))
    finally:
        sigterm(agent)
    sampled = int(series["sentinel_sidecar_rows_sampled_total"])

    def totals(taken: list[dict[str, str]]) -> dict[str, float]:
        def total(column: str) -> float:
            return sum(float(row[column] or 0) for row in taken)

        return {
            'sentinel_workload_cpu_seconds_total{mode="user"}': total("process_utime"),
            'sentinel_workload_cpu_seconds_total{mode="system"}': total("process_stime"),
            "sentinel_workload_disk_read_bytes_total": total("process_disk_read_bytes"),
            "sentinel_workload_disk_write_bytes_total": total("process_disk_write_bytes"),
            "sentinel_workload_network_receive_bytes_total": total("system_net_recv_bytes"),
            "sentinel_workload_network_transmit_bytes_total": total("system_net_sent_bytes"),
            "sentinel_workload_memory_bytes": float(taken[-1]["process_memory_mib"]) * MIB,
            "sentinel_workload_memory_peak_bytes": max(
                float(row["process_memory_mib"]) for row in taken
            )
            * MIB,
            "sentinel_workload_processes": 1 + int(taken[-1]["process_children"]),
        }

    def exported(name: str) -> float:
        # Every workload series carries the run's labels (empty outside a pod).
        base, _, mode = name.partition("{")
        labels = dict.fromkeys(("container_image", "job_name", "namespace", "pod"), "")
        if mode:
            labels["mode"] = mode.split('"')[1]
        text = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
        return series[f"{base}{{{text}}}"]

    # A scrape can fall between a row's totals and the count of rows: n or n + 1 rows.
    candidates = [totals(rows[:sampled]), totals(rows[: sampled + 1])]
    assert any(
        all(exported(name) == pytest.approx(value, rel=1e-9, abs=1e-9)
            for name, value in expected.items())
        for expected in candidates
    ), (series, candidates)  # fmt: skip
    user = candidates[0]['sentinel_workload_cpu_seconds_total{mode="user"}']
    print(f"{sampled} rows: {user:.4f} CPU-seconds of user time in the rows and on /metrics")


@pytest.fixture
def busy() -> Iterator[subprocess.Popen[bytes]]:
    """A workload at a steady core, with steady memory."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield process
    process.kill()
    process.wait()


class Prometheus:
    """A real Prometheus server on 127.0.0.1 scraping `target` every second, with its own
    configuration and data directory."""

    def __init__(self, directory: Path, target: str) -> None:
        binary = require("prometheus", PROMETHEUS_PACKAGE)
        config = directory / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: sentinel\n    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(self._ready, 30, "Prometheus ready")

    def _ready(self) -> bool:
        try:
            return requests.get(self.url + "/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    def query(self, expr: str, at: float) -> float:
        answer = requests.get(self.url + "/api/v1/query", params={"query": expr, "time": str(at)},
                              timeout=5).json()  # fmt: skip
        assert answer["status"] == "success", answer
        [result] = answer["data"]["result"]
        return float(result["value"][1])

    def scraped(self) -> bool:
        answer = requests.get(self.url + "/api/v1/targets", timeout=5).json()
        return any(t["health"] == "up" for t in answer["data"]["activeTargets"])

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


WINDOW = 10  # seconds of the rate() query and of the spool's rows it is compared with
CPU_BOUND = 0.1  # cores: scrapes (1 s) and rows (0.5 s) fall at different instants


def test_a_real_prometheus_scrapes_the_agent_and_its_answers_match_the_spool(tmp_path: Path, busy):
    spool, port = tmp_path / "spool", free_port()
    agent = local_agent(tmp_path, busy.pid, 0.5, port)
    prometheus = None
    try:
        wait_until(lambda: health_answers(port), 20, "the agent's health port")
        prometheus = Prometheus(tmp_path, f"127.0.0.1:{port}")
        wait_until(prometheus.scraped, 30, "the first scrape")
        time.sleep(WINDOW + 4)
        at = time.time() - 1  # a scrape within the last second is in
        cpu = prometheus.query(f"sum(rate(sentinel_workload_cpu_seconds_total[{WINDOW}s]))", at)
        memory = prometheus.query("sentinel_workload_memory_bytes", at)
        rows = columns(spool_rows(spool))
    finally:
        if prometheus is not None:
            prometheus.close()
        sigterm(agent)
    window = [row for row in rows if at - WINDOW < float(row["timestamp"]) <= at]
    spooled_cpu = sum(float(r["process_utime"]) + float(r["process_stime"]) for r in window)
    spooled_cores = spooled_cpu / WINDOW
    [last] = [row for row in rows if float(row["timestamp"]) <= at][-1:]
    spooled_memory = float(last["process_memory_mib"]) * MIB
    print(
        f"rate(sentinel_workload_cpu_seconds_total[{WINDOW}s]) = {cpu:.3f} cores; the spool's "
        f"rows in that window: {spooled_cores:.3f} cores ({len(window)} rows)"
    )
    print(f"sentinel_workload_memory_bytes = {memory:.0f}; the spool's last row: "
          f"{spooled_memory:.0f}")  # fmt: skip
    assert spooled_cores > 0.5  # the workload did burn a core
    assert abs(cpu - spooled_cores) <= CPU_BOUND
    assert memory == pytest.approx(spooled_memory, rel=0.02)
