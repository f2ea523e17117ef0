"""Health and metrics over HTTP: `/healthz`, `/readyz`, `/metrics` (`exposition.py`)."""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from sentinel_sidecar.exposition import Exposition
    from sentinel_sidecar.readiness import Probe

log = structlog.get_logger(__name__)


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
        self._exposition: Exposition | None = None  # made at the first scrape
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
            self._send(connection, 431, b"request too large\n", "text/plain")

    def _answer(self, data: bytes) -> tuple[int, bytes, str]:
        head, _, _ = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.replace(b"\r\n", b"\n").split(b"\n")
        method, _, rest = request_line.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return 405, b"only GET\n", "text/plain"
        probe = self.probe
        if path == b"/healthz":
            if probe.alive():
                return 200, b"ok\n", "text/plain"
            return 503, b"sampling stalled\n", "text/plain"
        if path == b"/readyz":
            reason = probe.not_ready()
            if reason:
                return 503, f"not ready: {reason}\n".encode(), "text/plain"
            return 200, b"ready\n", "text/plain"
        if path == b"/metrics":
            try:
                return (200, *self._metrics(_header(header_lines, b"accept")))
            except Exception as exc:  # a scrape must never stop the probes' server
                log.error("metrics_failed", error=f"{type(exc).__name__}: {exc}")
                return 500, b"metrics failed\n", "text/plain"
        return 404, b"not found\n", "text/plain"

    def _metrics(self, accept: str) -> tuple[bytes, str]:
        if self._exposition is None:
            from sentinel_sidecar.exposition import Exposition

            self._exposition = Exposition(self.probe)
        return self._exposition.render(accept)

    def _send(
        self, connection: socket.socket, status: int, payload: bytes, content_type: str
    ) -> None:
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


def _header(lines: list[bytes], name: bytes) -> str:
    """The value of the request header `name` (lower case), empty when it was not sent."""
    for line in lines:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip().decode("latin-1")
    return ""


@dataclass(eq=False)
class _Request:
    """A connection's arrival time and the bytes of its request so far."""

    opened: float
    data: bytes = b""
