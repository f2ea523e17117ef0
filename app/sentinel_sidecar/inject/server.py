"""The HTTPS server of `sentinel-sidecar inject`: `admission.k8s.io/v1` AdmissionReview in, the
review's answer out (`POST /mutate`: pods that opt in by annotation; `POST /mutate/namespace`:
the webhook entry whose namespace selector opted the namespace in), `/healthz`, `/metrics`.

Never in the way: whatever goes wrong inside, a well-formed review is answered `allowed: true`
without a patch (and counted), and what is not a review gets a 4xx, which the API server treats
by the webhook's `failurePolicy: Ignore`. Bounded: at most `max_concurrency` requests at once
(more are closed at once), a request within `max_request_bytes`, and a connection's whole
exchange within `request_seconds` (a kept-alive connection is closed then; the API server opens
another).
TLS from a certificate and key on disk (a mounted Secret), loaded again when either changes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, generate_latest

from sentinel_sidecar.inject.patch import Decision

log = structlog.get_logger(__name__)

API_VERSION = "admission.k8s.io/v1"

# How one review is decided: (the pod, its namespace, whether its namespace opted in) -> Decision
Decide = Callable[[dict[str, Any], str, bool], Decision]


class TlsFiles:
    """The serving certificate and key; a new SSL context whenever either file changed (a
    Secret's update swaps the files under the mount)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._seen: tuple[tuple[int, int, int], ...] | None = None
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        """The SSL context of the files as they are now (OSError or ssl.SSLError if unusable)."""
        seen = tuple(_identity(path) for path in (self.cert, self.key))
        with self._lock:
            if self._context is None or seen != self._seen:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(self.cert, self.key)
                if self._context is not None:
                    log.info("tls_reloaded", cert=str(self.cert))
                self._context, self._seen = context, seen
            return self._context


def _identity(path: Path) -> tuple[int, int, int]:
    status = os.stat(path)
    return status.st_ino, status.st_mtime_ns, status.st_size


@dataclass
class Limits:
    """What one request may take."""

    max_concurrency: int = 8
    max_request_bytes: int = 3 * 1024 * 1024  # the API server's own limit on an object
    request_seconds: float = 5.0  # TLS handshake, head and body, all of it (one timer)


class AdmissionServer(ThreadingHTTPServer):
    """One thread per request, at most `limits.max_concurrency` of them."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(
        self, port: int, tls: TlsFiles, decide: Decide, limits: Limits, host: str = "0.0.0.0"
    ) -> None:
        self.tls = tls
        self.decide = decide
        self.limits = limits
        self.slots = threading.BoundedSemaphore(limits.max_concurrency)
        self.registry = CollectorRegistry(auto_describe=False)
        self.reviews = Counter(
            "sentinel_inject_reviews", "AdmissionReviews answered, by result (injected, skipped, "
            "error: answered allowed without a patch).", ["result"], registry=self.registry,
        )  # fmt: skip
        self.refused = Counter(
            "sentinel_inject_requests_refused", "Requests refused before a review: busy, too "
            "large, too slow, not a review, TLS failed.", ["reason"], registry=self.registry,
        )  # fmt: skip
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused.labels("busy").inc()
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS first, in the request's own thread (never the accept loop's), and the whole
        exchange — handshake, head and body — within `request_seconds`: a timer shuts the
        connection then, so a client that trickles a byte at a time (which no per-read timeout
        catches) holds its slot no longer."""
        request.settimeout(self.limits.request_seconds)
        cutter = _Cutter(request.fileno(), self.limits.request_seconds)
        try:
            try:
                secure = self.tls.context().wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                self.refused.labels("tls").inc()
                log.debug("tls_failed", error=str(exc))
                return
            try:
                self.RequestHandlerClass(secure, client_address, self)  # type: ignore[arg-type]
            except (TimeoutError, ConnectionError, ssl.SSLError):
                self.refused.labels("slow").inc()
            finally:
                cutter.done()  # before the socket closes: its fd may be reused at once
                secure.close()
        finally:
            cutter.done()


class _Cutter:
    """Shuts the connection on `fd` down after `seconds` unless `done()` came first (through a
    duplicate: the SSL socket owns `fd`); its reads end, and so does its handler."""

    def __init__(self, fd: int, seconds: float) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._finished = False
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def done(self) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()

    def _cut(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            if not self._finished:
                duplicate = socket.fromfd(self._fd, socket.AF_INET, socket.SOCK_STREAM)
                with duplicate:
                    duplicate.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    server: AdmissionServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: every answer is counted, and decisions are logged with their reason."""

    def do_GET(self) -> None:
        if self.path == "/healthz":
            self._reply(200, b"ok\n", "text/plain")
        elif self.path == "/metrics":
            self._reply(200, generate_latest(self.server.registry), "text/plain; version=0.0.4")
        else:
            self._reply(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:
        namespaced = {"/mutate": False, "/mutate/namespace": True}.get(self.path.split("?")[0])
        if namespaced is None:
            self._reply(404, b"not found\n", "text/plain")
            return
        body = self._body()
        if body is None:
            return
        try:
            review = json.loads(body)
            request = review["request"]
            uid = request["uid"]
            if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
                raise ValueError(f"not an {API_VERSION} AdmissionReview")
            if not isinstance(uid, str) or not uid:
                raise ValueError("request.uid is not a string")
        except (ValueError, KeyError, TypeError) as exc:
            self.server.refused.labels("not_a_review").inc()
            self._reply(400, f"not an AdmissionReview: {exc}\n".encode(), "text/plain")
            return
        self._answer(uid, request, namespaced)

    def _body(self) -> bytes | None:
        """The request's body, or None after an error answer."""
        limits = self.server.limits
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._reply(411, b"Content-Length required\n", "text/plain")
            return None
        if length > limits.max_request_bytes or length < 0:
            self.server.refused.labels("too_large").inc()
            self._reply(413, b"request too large\n", "text/plain")
            return None
        body = self.rfile.read(length)  # the connection's timer bounds how long this takes
        return body if len(body) == length else None

    def _answer(self, uid: str, request: dict[str, Any], namespaced: bool) -> None:
        response: dict[str, Any] = {"uid": uid, "allowed": True}
        pod = request.get("object") or {}
        metadata = pod.get("metadata") or {}
        where = {"namespace": request.get("namespace"),
                 "pod": metadata.get("name") or metadata.get("generateName")}  # fmt: skip
        try:
            if request.get("kind", {}).get("kind") != "Pod" or request.get("operation") != "CREATE":
                decision = Decision(None, "not a pod's creation")
            else:
                decision = self.server.decide(pod, str(request.get("namespace") or ""), namespaced)
        except Exception as exc:  # never in the way: admitted as it is, counted
            self.server.reviews.labels("error").inc()
            log.error("injection_failed", **where, error=f"{type(exc).__name__}: {exc}")
        else:
            result = "injected" if decision.patch is not None else "skipped"
            self.server.reviews.labels(result).inc()
            log.info("injection", **where, result=result, reason=decision.reason,
                     warnings=decision.warnings or None)  # fmt: skip
            if decision.patch is not None:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(json.dumps(decision.patch).encode()).decode()
            if decision.warnings:
                response["warnings"] = decision.warnings
        answer = {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}
        self._reply(200, json.dumps(answer).encode(), "application/json")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)
