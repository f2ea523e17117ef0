import requests

from sentinel_sidecar.delivery.destination import DestinationStatus
from sentinel_sidecar.health import HealthServer, Probe
from sentinel_sidecar.telemetry import Telemetry


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
        metrics = requests.get(base + "/metrics", timeout=5).text
        assert "sentinel_sidecar_rows_sampled_total 5" in metrics
        assert "sentinel_sidecar_pending_bytes 123" in metrics
        assert "sentinel_sidecar_ingestion_errors_total 1" in metrics
        assert "sentinel_sidecar_credentials_seconds_left 250.0" in metrics
        assert "# TYPE sentinel_sidecar_upload_failures_total counter" in metrics
        stats.failing_since_monotonic = clock.now
        clock.now += 29
        assert requests.get(base + "/readyz", timeout=5).status_code == 200
        clock.now += 2  # failing for more than 3 upload intervals
        assert requests.get(base + "/readyz", timeout=5).status_code == 503
        assert requests.get(base + "/healthz", timeout=5).status_code == 503  # no sample for 31 s
        assert requests.get(base + "/nope", timeout=5).status_code == 404
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
