import contextlib
import resource
import signal
import socket
import time
from pathlib import Path

import pytest
import requests

from sentinel_sidecar.delivery.destination import DestinationStatus
from sentinel_sidecar.health import HealthServer
from sentinel_sidecar.readiness import Probe
from sentinel_sidecar.telemetry import Telemetry
from tests.support.agent import health_answers, scrape, start_agent, wait_until
from tests.support.peers import free_port


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_endpoints_follow_sampling_and_upload_health():
    clock = Clock()
    stats = Telemetry(rows_sampled=5, chunks_uploaded=2, ingestion_errors=1)
    probe = Probe(stats, interval=1, upload_interval=10, pending_bytes=lambda: 123,
                  destination=lambda: DestinationStatus(True, 250.0), monotonic=clock)  # fmt: skip
    server = HealthServer(0, probe, host="127.0.0.1")
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        stats.last_sample_monotonic = clock.now
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        assert requests.get(base + "/readyz", timeout=5).status_code == 200
        metrics = scrape(server.port)
        assert metrics["sentinel_sidecar_rows_sampled_total"] == 5
        assert metrics["sentinel_sidecar_pending_bytes"] == 123
        assert metrics["sentinel_sidecar_ingestion_errors_total"] == 1
        assert metrics["sentinel_sidecar_credentials_seconds_left"] == 250
        text = requests.get(base + "/metrics", timeout=5).text
        assert "# TYPE sentinel_sidecar_upload_failures_total counter" in text
        stats.failing_since_monotonic = clock.now
        clock.now += 29
        assert requests.get(base + "/readyz", timeout=5).status_code == 200
        clock.now += 2  # failing for more than 3 upload intervals
        assert requests.get(base + "/readyz", timeout=5).status_code == 503
        assert requests.get(base + "/healthz", timeout=5).status_code == 503  # no sample for 31 s
        assert requests.get(base + "/nope", timeout=5).status_code == 404
    finally:
        server.stop()


def test_a_failing_metrics_source_answers_500_and_the_probes_go_on():
    def broken() -> int:
        raise OSError("the spool's directory is gone")

    probe = Probe(Telemetry(), 1, 10, broken, lambda: DestinationStatus(ready=True))
    server = HealthServer(0, probe, host="127.0.0.1")
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert requests.get(base + "/metrics", timeout=5).status_code == 500
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        assert requests.get(base + "/metrics", timeout=5).status_code == 500  # still serving
    finally:
        server.stop()


def test_not_ready_before_registration():
    probe = Probe(Telemetry(), 1, 10, lambda: 0, lambda: DestinationStatus(ready=False))
    assert not probe.ready() and probe.alive()


def test_ready_names_what_stands_in_the_way():
    telemetry = Telemetry()
    probe = Probe(telemetry, 1, 10, lambda: 0, lambda: DestinationStatus(ready=True))
    assert probe.not_ready() is None
    telemetry.sample_failure = "UnicodeDecodeError"
    assert probe.not_ready() == "sampling_failing"
    telemetry.sample_failure = "spool_unwritable"
    assert probe.not_ready() == "spool_unwritable"


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/{pid}/status")


def test_ten_thousand_idle_connections_cost_no_thread_and_healthz_still_answers(
    tmp_path: Path, workload
):
    # One thread per connection and no timeout: 3,000 idle connections took the agent from
    # 30 to 108 MiB, near the chart's 128 Mi limit: anyone on the pod network could OOM it.
    flood = 10_000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < flood + 500:
        pytest.skip(f"the open-file limit ({hard}) is below {flood + 500}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, flood + 500), hard))
    port = free_port()
    agent = start_agent(["run", "--pid", str(workload.pid), "--spool-dir", str(tmp_path / "s"),
                         "--output-dir", str(tmp_path / "o"),
                         "--health-port", str(port)])  # fmt: skip
    sockets: list[socket.socket] = []
    try:
        wait_until(lambda: health_answers(port), 20, "health endpoint")
        time.sleep(1)
        rss_before = status_field(agent.pid, "VmRSS")
        for _ in range(flood):
            sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        started = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        answered_in = time.monotonic() - started
        rss_after = status_field(agent.pid, "VmRSS")
        threads = status_field(agent.pid, "Threads")
    finally:
        for connection in sockets:
            connection.close()
        agent.send_signal(signal.SIGTERM)
        _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    grown = (rss_after - rss_before) / 1024
    print(f"{flood} idle connections: RSS {rss_before / 1024:.1f} -> {rss_after / 1024:.1f} MiB, "
          f"{threads} threads, /healthz in {answered_in * 1000:.0f} ms")  # fmt: skip
    assert grown < 5 and answered_in < 1 and threads < 10


def test_a_slow_or_oversized_request_is_cut_off():
    probe = Probe(Telemetry(), 1, 10, lambda: 0, lambda: DestinationStatus(ready=True))
    server = HealthServer(0, probe, host="127.0.0.1")
    server.start()
    try:
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # and never the rest
        started = time.monotonic()
        assert slow.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < HealthServer.REQUEST_SECONDS + 1
        big = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with contextlib.suppress(OSError):
            big.sendall(b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 20_000)
        assert big.recv(100).startswith(b"HTTP/1.0 431")
    finally:
        server.stop()
