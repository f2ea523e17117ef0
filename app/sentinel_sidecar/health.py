"""Health and metrics over HTTP: `/healthz`, `/readyz`, `/metrics` (Prometheus text format)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog

from sentinel_sidecar.delivery.destination import DestinationStatus
from sentinel_sidecar.telemetry import SPOOL_UNWRITABLE, Telemetry

log = structlog.get_logger(__name__)

# Ready means uploads have not been failing for longer than this many upload intervals.
FAILING_INTERVALS = 3


@dataclass(frozen=True)
class Probe:
    """What the endpoints judge by."""

    telemetry: Telemetry
    interval: float
    upload_interval: float
    pending_bytes: Callable[[], int]
    destination: Callable[[], DestinationStatus]
    monotonic: Callable[[], float] = time.monotonic

    def alive(self) -> bool:
        """The sampling loop took a sample recently (or is still starting)."""
        last = self.telemetry.last_sample_monotonic
        return last is None or self.monotonic() - last < 3 * self.interval + 10

    def ready(self) -> bool:
        """Nothing stands in the way of delivery."""
        return self.not_ready() is None

    def not_ready(self) -> str | None:
        """Why `/readyz` fails: rows cannot be written to the spool, the last sample could not
        be read, the destination is not open (registered, where it needs that), or deliveries
        have been failing for long."""
        failure = self.telemetry.sample_failure
        if failure is not None:
            return SPOOL_UNWRITABLE if failure == SPOOL_UNWRITABLE else "sampling_failing"
        if not self.destination().ready:
            return "destination_not_open"
        failing = self.telemetry.failing_since_monotonic
        if (
            failing is not None
            and self.monotonic() - failing >= FAILING_INTERVALS * self.upload_interval
        ):
            return "deliveries_failing"
        return None

    def metrics(self) -> str:
        """Prometheus text exposition."""
        stats = self.telemetry
        left = self.destination().credentials_left
        series = [
            ("rows_sampled_total", "counter", "Rows appended to the spool.", stats.rows_sampled),
            ("read_errors_total", "counter",
             "Kernel files that could not be read or parsed (their cells stay empty).",
             stats.read_errors),
            ("sample_failures_total", "counter",
             "Samples not taken or not written (read error, spool unwritable).",
             stats.sample_failures),
            ("chunks_uploaded_total", "counter", "Chunks confirmed.", stats.chunks_uploaded),
            ("upload_failures_total", "counter", "Failed delivery attempts.",
             stats.upload_failures),
            ("ingestion_errors_total", "counter",
             "Finished runs whose data Sentinel reported as not ingested.", stats.ingestion_errors),
            ("pending_bytes", "gauge", "Spooled bytes not yet uploaded.", self.pending_bytes()),
            ("credentials_seconds_left", "gauge", "Seconds until the upload credentials expire.",
             left),
            ("last_upload_timestamp_seconds", "gauge", "UNIX time of the last confirmed upload.",
             stats.last_upload_wall),
            ("ready", "gauge", "1 when /readyz answers 200.", int(self.ready())),
        ]  # fmt: skip
        lines = []
        for name, kind, help_text, value in series:
            if value is None:
                continue
            full = "sentinel_sidecar_" + name
            lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}", f"{full} {value}"]
        return "\n".join(lines) + "\n"


class HealthServer:
    """A small threaded HTTP server on `port` (0 = off) serving the probe."""

    def __init__(self, port: int, probe: Probe, host: str = "0.0.0.0") -> None:
        self.probe = probe
        handler = _handler(probe)
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()
        log.info("health_listening", port=self.port)

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()


def _handler(probe: Probe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = probe.alive()
                self._send(200 if ok else 503, "ok\n" if ok else "sampling stalled\n")
            elif self.path == "/readyz":
                reason = probe.not_ready()
                self._send(
                    503 if reason else 200, f"not ready: {reason}\n" if reason else "ready\n"
                )
            elif self.path == "/metrics":
                self._send(200, probe.metrics(), "text/plain; version=0.0.4")
            else:
                self._send(404, "not found\n")

        def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # probes every few seconds would flood the log

    return Handler
