"""Real protocol peers for the tests: moto (S3 + STS + IAM) in server mode, an S3 proxy that
enforces credential expiry and can go down, and a Sentinel-compatible API server."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3

REGION = "us-east-1"
_ALLOW_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
)
_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
)
# The unauthenticated calls moto allows before it checks every signature: exactly the set-up.
_SETUP_ACTIONS = 5

REGISTER_FIELDS = frozenset(
    [
        "project_name",
        "job_name",
        "stage_name",
        "task_name",
        "team",
        "env",
        "language",
        "orchestrator",
        "executor",
        "external_run_id",
        "container_image",
        "command",
        "tags",
        "host_id",
        "host_hostname",
        "host_ip",
        "host_vcpus",
        "host_cpu_model",
        "host_memory_mib",
        "host_gpu_model",
        "host_gpu_count",
        "host_gpu_memory_mib",
        "host_storage_gb",
        "cloud_vendor_id",
        "cloud_account_id",
        "cloud_region_id",
        "cloud_zone_id",
        "cloud_instance_type",
    ]
)
FINISH_FIELDS = frozenset({"exit_code", "run_status", "data_source", "data_uris", "data_csv"})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class MotoServer:
    """moto_server on 127.0.0.1 with signature checking on, an IAM user and an uploader role."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        anonymous = {"aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = self.client("iam", **anonymous)
        iam.create_user(UserName="sentinel")
        key = iam.create_access_key(UserName="sentinel")["AccessKey"]
        iam.put_user_policy(UserName="sentinel", PolicyName="all", PolicyDocument=_ALLOW_ALL)
        role = iam.create_role(RoleName="uploader", AssumeRolePolicyDocument=_TRUST)
        iam.put_role_policy(RoleName="uploader", PolicyName="s3", PolicyDocument=_ALLOW_ALL)
        self.user = {
            "aws_access_key_id": key["AccessKeyId"],
            "aws_secret_access_key": key["SecretAccessKey"],
        }
        self.role_arn = role["Role"]["Arn"]

    def client(self, service: str, **credentials: str) -> Any:
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name=REGION, **(credentials or self.user)
        )

    def new_bucket(self) -> str:
        name = f"runs-{uuid.uuid4().hex[:12]}"
        self.client("s3").create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Objects under `prefix`, by key (listed without Prefix: see DEVELOPERS quirks)."""
        s3 = self.client("s3")
        keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        return {
            key: s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            for key in sorted(keys)
            if key.startswith(prefix)
        }

    def assume_role(self, session: str) -> dict[str, Any]:
        sts = self.client("sts")
        answer = sts.assume_role(RoleArn=self.role_arn, RoleSessionName=session)
        return dict(answer["Credentials"])

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)


@dataclass
class ProxyLog:
    method: str
    path: str
    status: int | None
    token: str | None


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with a free port, serving until `close()`."""

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class S3Proxy(LoopbackServer):
    """Forwards S3 requests to moto unchanged; answers the real `ExpiredToken` error for a
    session token past its expiry, and drops connections while `down`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.expiry: dict[str, float] = {}  # session token -> UNIX time it stops working
        self.down = False
        self.log: list[ProxyLog] = []
        self._serve(self._handler())
        self.endpoint = self.url

    def expired_puts(self) -> list[ProxyLog]:
        return [e for e in self.log if e.method == "PUT" and e.status == 400]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                token = self.headers.get("x-amz-security-token")
                if proxy.down:
                    proxy.log.append(ProxyLog(self.command, self.path, None, token))
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if token is not None and time.time() >= proxy.expiry.get(token, float("inf")):
                    self._expired(token)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                proxy.log.append(ProxyLog(self.command, self.path, answer.status, token))
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                upstream.close()

            def _expired(self, token: str) -> None:
                proxy.log.append(ProxyLog(self.command, self.path, 400, token))
                data = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
                    "<Message>The provided token has expired.</Message>"
                    f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
                ).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


@dataclass
class Run:
    run_id: str
    body: dict[str, Any]
    prefix: str
    finishes: list[dict[str, Any]] = field(default_factory=list)
    refreshes: int = 0


class SentinelServer(LoopbackServer):
    """The Sentinel API contract of DESIGN.md, handing out moto STS credentials.

    `credentials_ttl` is the `expires_at` the server announces; `token_lifetime` is how long the
    S3 proxy really accepts a token (defaults to the announced expiry).
    """

    def __init__(
        self,
        moto: MotoServer,
        proxy: S3Proxy,
        bucket: str,
        token: str = "sentinel-test-token",
        credentials_ttl: float = 3600.0,
        token_lifetime: float | None = None,
        expiry_field: str = "expires_at",
    ) -> None:
        self.moto = moto
        self.proxy = proxy
        self.bucket = bucket
        self.token = token
        self.credentials_ttl = credentials_ttl
        self.token_lifetime = token_lifetime
        self.expiry_field = expiry_field
        self.unavailable_until = 0.0  # monotonic time before which POST /runs is refused
        self.unavailable_status = 503
        self.retry_after: str | None = None
        self.runs: dict[str, Run] = {}
        self.requests: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._serve(self._handler())

    def registrations(self) -> int:
        return sum(1 for path, status in self.requests if path == "/runs" and status == 200)

    def _credentials(self, run_id: str) -> dict[str, Any]:
        issued = self.moto.assume_role(run_id)
        now = time.time()
        lifetime = self.credentials_ttl if self.token_lifetime is None else self.token_lifetime
        self.proxy.expiry[issued["SessionToken"]] = now + lifetime
        expires = datetime.now(UTC) + timedelta(seconds=self.credentials_ttl)
        return {
            "access_key": issued["AccessKeyId"],
            "secret_key": issued["SecretAccessKey"],
            "session_token": issued["SessionToken"],
            self.expiry_field: expires.isoformat().replace("+00:00", "Z"),
            "region": REGION,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                status, answer = self._route()
                with api._lock:
                    api.requests.append((self.path, status))
                data = json.dumps(answer).encode()
                self.send_response(status)
                if status in (429, 503) and api.retry_after is not None:
                    self.send_header("Retry-After", api.retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self) -> tuple[int, dict[str, Any]]:
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    return 401, {"detail": "Invalid or missing token"}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return 400, {"detail": "body is not JSON"}
                parts = self.path.strip("/").split("/")
                if parts == ["runs"]:
                    return self._register(body)
                if len(parts) == 3 and parts[0] == "runs" and parts[1] in api.runs:
                    run = api.runs[parts[1]]
                    if parts[2] == "refresh-credentials":
                        run.refreshes += 1
                        return 200, {"upload_credentials": api._credentials(run.run_id)}
                    if parts[2] == "finish":
                        return self._finish(run, body)
                return 404, {"detail": "not found"}

            def _register(self, body: Any) -> tuple[int, dict[str, Any]]:
                if time.monotonic() < api.unavailable_until:
                    return api.unavailable_status, {"detail": "try again later"}
                if not isinstance(body, dict):
                    return 422, {"detail": "body must be an object"}
                unknown = sorted(set(body) - REGISTER_FIELDS)
                if unknown:
                    return 422, {"detail": f"unknown fields: {unknown}"}
                if any(value is None for value in body.values()):
                    return 422, {"detail": "null values are not accepted"}
                if "command" in body and not isinstance(json.loads(body["command"]), list):
                    return 422, {"detail": "command must be a JSON array string"}
                run_id = uuid.uuid4().hex
                prefix = f"s3://{api.bucket}/runs/{run_id}"
                api.runs[run_id] = Run(run_id, body, prefix)
                return 200, {
                    "run_id": run_id,
                    "upload_uri_prefix": prefix,
                    "upload_credentials": api._credentials(run_id),
                }

            def _finish(self, run: Run, body: Any) -> tuple[int, dict[str, Any]]:
                if not isinstance(body, dict) or set(body) - FINISH_FIELDS:
                    return 422, {"detail": "unknown fields in finish body"}
                if body.get("run_status") not in ("finished", "failed"):
                    return 422, {"detail": "run_status must be finished or failed"}
                source = body.get("data_source")
                if source == "s3" and not isinstance(body.get("data_uris"), list):
                    return 422, {"detail": "data_uris required for s3"}
                if source == "inline" and not isinstance(body.get("data_csv"), str):
                    return 422, {"detail": "data_csv required for inline"}
                if source not in ("s3", "inline"):
                    return 422, {"detail": "data_source must be s3 or inline"}
                run.finishes.append(body)
                return 200, {"run": {"run_id": run.run_id, "status": body["run_status"]},
                             "processing": {"status": "queued"}}  # fmt: skip

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
