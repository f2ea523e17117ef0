"""Health and metrics over HTTP: `/healthz`, `/readyz`, `/metrics` (Prometheus text format)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import structlog

from sentinel_sidecar.delivery.destination import DestinationStatus
from sentinel_sidecar.telemetry import SPOOL_FULL, SPOOL_UNWRITABLE, Telemetry

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
        be read, undelivered rows fill the spool's cap, the destination is not open
        (registered, where it needs that), or deliveries have been failing for long."""
        failure = self.telemetry.sample_failure
        if failure is not None:
            return SPOOL_UNWRITABLE if failure == SPOOL_UNWRITABLE else "sampling_failing"
        if self.telemetry.spool_full:
            return SPOOL_FULL
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
            ("rows_merged_total", "counter",
             "Samples folded into a neighbouring row to keep the spool in its cap (totals kept).",
             stats.rows_merged),
            ("rows_dropped_total", "counter",
             "Samples given up to keep the spool in its cap.", stats.rows_dropped),
            ("chunks_uploaded_total", "counter", "Chunks confirmed.", stats.chunks_uploaded),
            ("chunks_refused_total", "counter",
             "Chunks refused for good by the destination and set aside in the spool's refused/.",
             stats.chunks_refused),
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
    """`/healthz`, `/readyz` and `/metrics` on `port`, served by one thread with a selector.

    Built so that nobody who can reach the pod's IP can exhaust the agent: at most
    MAX_CONNECTIONS are open at once (a new one closes the one open longest), a request must
    arrive whole within REQUEST_SECONDS and in MAX_REQUEST_BYTES, and an idle connection costs
    a file descriptor and a few hundred bytes, never a thread. Answers are small and sent once
    (HTTP/1.0, connection closed), so no peer can hold the loop."""

    MAX_CONNECTIONS = 64
    REQUEST_SECONDS = 2.0
    MAX_REQUEST_BYTES = 8192

    def __init__(self, port: int, probe: Probe, host: str = "0.0.0.0") -> None:
        self.probe = probe
        self._listener = socket.create_server((host, port), backlog=128)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._wakeup, self._wake = socket.socketpair()
        self._selector.register(self._wakeup, selectors.EVENT_READ)
        self._open: dict[socket.socket, _Request] = {}  # insertion order: oldest first
        self._thread = threading.Thread(target=self._serve, name="health", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()
        log.info("health_listening", port=self.port)

    def stop(self) -> None:
        """Stop serving and close every connection."""
        self._wake.send(b"x")
        self._thread.join(5)

    def _serve(self) -> None:
        try:
            while True:
                for key, _mask in self._selector.select(timeout=self.REQUEST_SECONDS / 4):
                    if key.fileobj is self._wakeup:
                        return
                    if key.fileobj is self._listener:
                        self._accept()
                    else:
                        self._receive(key.fileobj)  # type: ignore[arg-type]
                self._expire()
        finally:
            for connection in list(self._open):
                self._close(connection)
            for resource in (self._listener, self._wakeup, self._wake):
                resource.close()
            self._selector.close()

    def _accept(self) -> None:
        while True:
            try:
                connection, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the next round tries again
                log.warning("health_accept_failed", error=exc.strerror)
                return
            if len(self._open) >= self.MAX_CONNECTIONS:
                self._close(next(iter(self._open)))
            connection.setblocking(False)
            self._open[connection] = _Request(time.monotonic())
            self._selector.register(connection, selectors.EVENT_READ)

    def _receive(self, connection: socket.socket) -> None:
        request = self._open.get(connection)
        if request is None:
            return  # closed earlier in this round, to make room
        try:
            data = connection.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        request.data += data
        if b"\r\n\r\n" in request.data or b"\n\n" in request.data:
            self._send(connection, *self._answer(request.data))
        elif len(request.data) > self.MAX_REQUEST_BYTES:
            self._send(connection, 431, "request too large\n")

    def _answer(self, data: bytes) -> tuple[int, str, str]:
        method, _, rest = data.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, "only GET\n", "text/plain"
        probe = self.probe
        if path == b"/healthz":
            ok = probe.alive()
            return (200, "ok\n", "text/plain") if ok else (503, "sampling stalled\n", "text/plain")
        if path == b"/readyz":
            reason = probe.not_ready()
            if reason:
                return 503, f"not ready: {reason}\n", "text/plain"
            return 200, "ready\n", "text/plain"
        if path == b"/metrics":
            return 200, probe.metrics(), "text/plain; version=0.0.4"
        return 404, "not found\n", "text/plain"

    def _send(
        self, connection: socket.socket, status: int, body: str, content_type: str = "text/plain"
    ) -> None:
        payload = body.encode()
        head = (
            f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with contextlib.suppress(OSError):  # a peer that left or does not read: its loss
            connection.send(head + payload)
        self._close(connection)

    def _expire(self) -> None:
        too_old = time.monotonic() - self.REQUEST_SECONDS
        for connection, request in list(self._open.items()):
            if request.opened > too_old:
                break  # the rest were opened later
            self._close(connection)

    def _close(self, connection: socket.socket) -> None:
        self._open.pop(connection, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection)
        connection.close()


@dataclass
class _Request:
    """A connection's arrival time and the bytes of its request so far."""

    opened: float
    data: bytes = b""
