"""Real protocol peers for the tests: moto (S3 + STS + IAM) in server mode, an S3 proxy that
enforces credential expiry and can go down, and a Sentinel-compatible API server."""

from __future__ import annotations

import email.utils
import gzip
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
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

# The service's run model: field -> accepted types (null is always accepted). A value of another
# type is answered with 422, as the live service does (resource-tracker-rs recorded it for
# `command` and `pid`); `tags` is an object of strings, `command` a JSON-array string.
_TEXT = (str,)
REGISTER_FIELDS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        ["project_name", "job_name", "stage_name", "task_name", "team", "env", "language",
         "orchestrator", "executor", "external_run_id", "container_image", "command"],
        _TEXT,
    ),
    "tags": (dict,),
    **dict.fromkeys(
        ["host_id", "host_hostname", "host_ip", "host_server_allocation", "host_cpu_model",
         "host_gpu_model", "cloud_vendor_id", "cloud_account_id", "cloud_region_id",
         "cloud_zone_id", "cloud_instance_type"],
        _TEXT,
    ),
    **dict.fromkeys(["host_vcpus", "host_memory_mib", "host_gpu_count", "host_gpu_memory_mib"],
                    (int,)),
    "host_storage_gb": (int, float),
}  # fmt: skip
FINISH_FIELDS = frozenset(
    {"exit_code", "run_status", "finished_at", "data_source", "data_uris", "data_csv"}
)
# The header the service validates on every object and inline CSV: exactly these, in order.
SENTINEL_HEADER = (
    "timestamp,system_processes,system_utime,system_stime,system_cpu_usage,"
    "system_memory_free_mib,system_memory_used_mib,system_memory_buffers_mib,"
    "system_memory_cached_mib,system_memory_active_mib,system_memory_inactive_mib,"
    "system_disk_read_bytes,system_disk_write_bytes,system_disk_space_total_gb,"
    "system_disk_space_used_gb,system_disk_space_free_gb,system_net_recv_bytes,"
    "system_net_sent_bytes,system_gpu_usage,system_gpu_vram_mib,system_gpu_utilized,"
    "process_pid,process_children,process_utime,process_stime,process_cpu_usage,"
    "process_memory_mib,process_disk_read_bytes,process_disk_write_bytes,process_gpu_usage,"
    "process_gpu_vram_mib,process_gpu_utilized"
)


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

    def new_bucket(self, region: str = REGION) -> str:
        name = f"runs-{uuid.uuid4().hex[:12]}"
        where = {} if region == REGION else {"LocationConstraint": region}
        self.client("s3").create_bucket(Bucket=name, **({"CreateBucketConfiguration": where}
                                                         if where else {}))  # fmt: skip
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


class S3rver:
    """A second S3 implementation (the npm package s3rver) on 127.0.0.1: its own key listing,
    no `x-amz-bucket-region` on HeadBucket, its default keys (S3RVER/S3RVER) checked."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.keys = {"aws_access_key_id": "S3RVER", "aws_secret_access_key": "S3RVER"}
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [binary, "--directory", str(directory), "--address", "127.0.0.1", "--port",
             str(self.port), "--silent"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def client(self) -> Any:
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, **self.keys
        )

    def objects(self, bucket: str) -> dict[str, bytes]:
        s3 = self.client()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in sorted(keys)}

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(10)


_SIGNED_REGION = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/s3/")


@dataclass
class ProxyLog:
    method: str
    path: str
    status: int | None
    token: str | None


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with a free port, serving until `close()`.

    `hang` makes it misbehave as real peers do: "blackhole" reads the request and never
    answers; "slow" answers after 30 s; "trickle" sends its answer one byte every 2 s. Every
    wait ends when the server is closed."""

    hang: str | None = None

    def _hangs(self, path: str) -> str | None:
        """How the answer to a request for `path` misbehaves (`hang`)."""
        return self.hang

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _answer(self, handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str],
                data: bytes) -> None:  # fmt: skip
        """Send an answer the way `hang` says."""
        hang = self._hangs(handler.path)
        if hang == "blackhole":
            self._closing.wait(600)
            handler.close_connection = True
            return
        if hang == "slow":
            self._closing.wait(30)
        head = f"HTTP/1.1 {status} {http.client.responses.get(status, 'Status')}\r\n"
        if not any(key.lower() == "date" for key in headers):
            headers = {**headers, "Date": email.utils.formatdate(usegmt=True)}
        head += "".join(f"{key}: {value}\r\n" for key, value in headers.items())
        head += f"Content-Length: {len(data)}\r\n\r\n"
        raw = head.encode() + data
        if hang != "trickle":
            handler.wfile.write(raw)
            return
        for index in range(len(raw)):
            if self._closing.wait(2):
                return
            handler.wfile.write(raw[index : index + 1])
            handler.wfile.flush()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


class S3Proxy(LoopbackServer):
    """Forwards S3 requests to moto unchanged; answers the real `ExpiredToken` error for a
    session token past its expiry, S3's `AuthorizationHeaderMalformed` (with the bucket's
    region in `x-amz-bucket-region`) for a request signed for another region than the bucket's
    (moto checks neither), drops connections while `down`, and refuses the next `refuse_puts`
    chunk uploads with S3's `BadDigest` (as when something on the way altered the body): a
    refusal of the request itself, which no retry of it fixes. `hang` applies to every request,
    or with `hang_only` to those whose path holds it (".csv.gz": the chunks, not the listing)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.expiry: dict[str, float] = {}  # session token -> UNIX time it stops working
        self.bucket_regions: dict[str, str] = {}  # bucket -> the only region it answers in
        self.down = False
        self.refuse_puts = 0
        self.hang_only: str | None = None
        self.log: list[ProxyLog] = []
        self._serve(self._handler())
        self.endpoint = self.url

    def _hangs(self, path: str) -> str | None:
        return self.hang if self.hang_only is None or self.hang_only in path else None

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
                if self.command == "PUT" and self.path.endswith(".csv.gz") and proxy.refuse_puts:
                    proxy.refuse_puts -= 1
                    message = "The Content-MD5 you specified did not match what we received."
                    self._error(token, "BadDigest", message)
                    return
                bucket = self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
                signed = _SIGNED_REGION.search(self.headers.get("Authorization") or "")
                expected = proxy.bucket_regions.get(bucket)
                if expected and signed and signed.group(1) != expected:
                    self._wrong_region(signed.group(1), expected, token)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                upstream.close()
                proxy.log.append(ProxyLog(self.command, self.path, answer.status, token))
                skip = ("connection", "transfer-encoding", "content-length")
                kept = {k: v for k, v in answer.getheaders() if k.lower() not in skip}
                proxy._answer(self, answer.status, kept, data)

            def _expired(self, token: str) -> None:
                self._error(token, "ExpiredToken", "The provided token has expired.")

            def _wrong_region(self, signed: str, expected: str, token: str | None) -> None:
                message = (
                    f"The authorization header is malformed; the region '{signed}' is wrong; "
                    f"expecting '{expected}'"
                )
                region = {"x-amz-bucket-region": expected}
                extra = f"<Region>{expected}</Region>"
                self._error(token, "AuthorizationHeaderMalformed", message, extra, region)

            def _error(self, token: str | None, code: str, message: str, extra: str = "",
                       headers: dict[str, str] | None = None) -> None:  # fmt: skip
                proxy.log.append(ProxyLog(self.command, self.path, 400, token))
                data = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                    f"<Message>{message}</Message>{extra}"
                    f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
                ).encode()
                body = b"" if self.command == "HEAD" else data
                self.send_response(400)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
        self.processing_error: str | None = None  # set: finishes report a failed ingestion
        self.register_answer: dict[str, Any] | None = None  # set: answered to every register
        self.credentials_region: str | None = REGION  # None: the credentials name no region
        self.issued_secrets: list[str] = []  # secret keys and session tokens handed out
        self.runs: dict[str, Run] = {}
        self.requests: list[tuple[str, int]] = []
        self.user_agents: set[str] = set()  # as sent with each call
        self._lock = threading.Lock()
        self._serve(self._handler())

    def _ingest(self, run: Run, body: dict[str, Any]) -> tuple[str | None, int, int]:
        """Read the run's data as the service does: (problem or None, rows, files)."""
        if body["data_source"] == "inline":
            problem = _csv_problem(body["data_csv"], "data_csv")
            return problem, body["data_csv"].count("\n") - 1, 0
        rows = 0
        s3 = self.moto.client("s3")
        for uri in body["data_uris"]:
            if not uri.startswith(run.prefix + "/"):
                return f"{uri} is not under the run's prefix {run.prefix}", 0, 0
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            try:
                stored = s3.get_object(Bucket=bucket, Key=key)
            except s3.exceptions.NoSuchKey:
                return f"{uri} does not exist", 0, 0
            if stored.get("ContentEncoding"):
                return (
                    f"{uri}: Content-Encoding {stored['ContentEncoding']}: clients unpack it",
                    0,
                    0,
                )
            try:
                text = gzip.decompress(stored["Body"].read()).decode()
            except (OSError, UnicodeDecodeError):
                return f"{uri} is not a gzipped UTF-8 CSV", 0, 0
            problem = _csv_problem(text, uri)
            if problem is not None:
                return problem, 0, 0
            rows += text.count("\n") - 1
        return None, rows, len(body["data_uris"])

    def registrations(self) -> int:
        return sum(1 for path, status in self.requests if path == "/runs" and status == 200)

    def _credentials(self, run_id: str) -> dict[str, Any]:
        issued = self.moto.assume_role(run_id)
        self.issued_secrets += [issued["SecretAccessKey"], issued["SessionToken"]]
        now = time.time()
        lifetime = self.credentials_ttl if self.token_lifetime is None else self.token_lifetime
        self.proxy.expiry[issued["SessionToken"]] = now + lifetime
        expires = datetime.now(UTC) + timedelta(seconds=self.credentials_ttl)
        return {
            "access_key": issued["AccessKeyId"],
            "secret_key": issued["SecretAccessKey"],
            "session_token": issued["SessionToken"],
            self.expiry_field: expires.isoformat().replace("+00:00", "Z"),
            "region": self.credentials_region,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                status, answer = self._route()
                with api._lock:
                    api.requests.append((self.path, status))
                    api.user_agents.add(self.headers.get("User-Agent", ""))
                headers = {"Content-Type": "application/json"}
                if status in (429, 503) and api.retry_after is not None:
                    headers["Retry-After"] = api.retry_after
                api._answer(self, status, headers, json.dumps(answer).encode())

            def _route(self) -> tuple[int, dict[str, Any]]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""  # read whatever the answer
                presented = self.headers.get("Authorization")
                if presented != f"Bearer {api.token}":
                    # Echoes what it was sent, as careless services do: the agent must redact
                    # the token by its value, wherever it shows up.
                    return 401, {"detail": f"Invalid or missing token: {presented!r}"}
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
                problem = _register_problem(body)
                if problem is not None:
                    return 422, {"detail": problem}
                if api.register_answer is not None:
                    return 200, api.register_answer
                run_id = uuid.uuid4().hex
                prefix = f"s3://{api.bucket}/runs/{run_id}"
                api.runs[run_id] = Run(run_id, body, prefix)
                return 200, {
                    "run_id": run_id,
                    "upload_uri_prefix": prefix,
                    "upload_credentials": api._credentials(run_id),
                }

            def _finish(self, run: Run, body: Any) -> tuple[int, dict[str, Any]]:
                started = time.monotonic()
                problem = _finish_problem(body)
                if problem is None:
                    problem, rows, files = api._ingest(run, body)
                if problem is not None:
                    return 422, {"detail": problem}
                run.finishes.append(body)
                error = api.processing_error
                return 200, {
                    "run": {
                        "run_id": run.run_id,
                        "run_status": body["run_status"],
                        "exit_code": body.get("exit_code"),
                        "finished_at": body.get("finished_at"),
                    },
                    "processing": {
                        "status": "failed" if error else "completed",
                        "rows": 0 if error else rows,
                        "files": files,
                        "duration_ms": round((time.monotonic() - started) * 1000),
                        "error": error,
                    },
                }

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler


def _register_problem(body: dict[str, Any]) -> str | None:
    """Why the service would answer 422 to this register body, or None."""
    unknown = sorted(set(body) - set(REGISTER_FIELDS))
    if unknown:
        return f"unknown fields: {unknown}"
    for name, value in body.items():
        accepted = REGISTER_FIELDS[name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, accepted):
            return f"{name}: expected {'/'.join(t.__name__ for t in accepted)}, got {value!r}"
    tags = body.get("tags")
    if tags is not None and not all(isinstance(v, str) for v in [*tags, *tags.values()]):
        return "tags: keys and values must be strings"
    command = body.get("command")
    if command is not None:
        try:
            parsed = json.loads(command)
        except ValueError:
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(part, str) for part in parsed):
            return "command must be a string holding a JSON array of strings"
    return None


def _finish_problem(body: Any) -> str | None:
    """Why the service would answer 422 to this finish body (before reading data), or None."""
    if not isinstance(body, dict):
        return "body must be an object"
    unknown = sorted(set(body) - FINISH_FIELDS)
    if unknown:
        return f"unknown fields in finish body: {unknown}"
    if body.get("run_status") not in ("finished", "failed"):
        return "run_status must be finished or failed"
    exit_code = body.get("exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        return "exit_code must be an integer"
    finished_at = body.get("finished_at")
    if finished_at is not None:
        try:
            parsed = datetime.fromisoformat(str(finished_at).replace("Z", "+00:00"))
        except ValueError:
            return "finished_at must be ISO-8601"
        if parsed.tzinfo is None:
            return "finished_at must carry a time zone"
    source = body.get("data_source")
    if source == "s3":
        uris = body.get("data_uris")
        if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
            return "data_uris must be a non-empty list of URIs"
        if "data_csv" in body:
            return "data_csv is for inline runs"
    elif source == "inline":
        if not isinstance(body.get("data_csv"), str):
            return "data_csv required for inline"
        if "data_uris" in body:
            return "data_uris is for s3 runs"
    else:
        return "data_source must be s3 or inline"
    return None


def _csv_problem(text: str, where: str) -> str | None:
    header = text.split("\n", 1)[0]
    if header != SENTINEL_HEADER:
        return f"{where}: the header is not the 32 Sentinel columns: {header[:120]!r}"
    return None


class KubeApiServer:
    """The in-cluster Kubernetes API on 127.0.0.1 over TLS (certificate in `cert`, signed for
    127.0.0.1). A GET answers `objects[path]` when there is one, else the next of `answers`
    (the last one repeats); a path in `hang` is read and never answered until `close()`."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.answers: list[tuple[int, Any]] = [(404, {"kind": "Status", "code": 404})]
        self.objects: dict[str, tuple[int, Any]] = {}
        self.hang: set[str] = set()
        self.seen: list[tuple[str, str | None]] = []
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.seen.append((self.path, self.headers.get("Authorization")))
                if self.path in server.hang:
                    server._closing.wait(60)
                    return
                path = self.path.split("?", 1)[0]  # kubectl's clients add ?timeout=32s
                if path in server.objects:
                    status, body = server.objects[path]
                else:
                    answers = server.answers
                    status, body = answers.pop(0) if len(answers) > 1 else answers[0]
                data = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def environ(self, **more: str) -> dict[str, str]:
        """What the Downward API and the kubelet give the agent's container."""
        return {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(self.port),
                "POD_NAME": "train-x7k2p", "POD_NAMESPACE": "ml", **more}  # fmt: skip

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def service_account(directory: Path) -> Path:
    """A service-account dir (token, namespace, ca.crt) whose CA signs a 127.0.0.1 server
    certificate, written to `directory.parent / "key.pem"` with the certificate."""
    directory.mkdir()
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(directory.parent / "key.pem"), "-out", str(directory / "ca.crt")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    (directory / "token").write_text("sa-token\n")
    (directory / "namespace").write_text("ml\n")
    return directory


class MetadataServer(LoopbackServer):
    """One cloud's metadata service on 127.0.0.1, as strict as the real one about its headers;
    404 for the other clouds' paths. `cloud`: aws (IMDSv2: a token from PUT first), gcp,
    azure; `hang` as for the other peers."""

    def __init__(self, cloud: str, document: dict[str, Any]) -> None:
        self.cloud = cloud
        self.document = document
        self.requests: list[str] = []
        self._token = uuid.uuid4().hex
        self._serve(self._handler())

    def _route(self, method: str, path: str, headers: Any) -> tuple[int, dict[str, str], bytes]:
        json_type = {"Content-Type": "application/json"}
        body = json.dumps(self.document).encode()
        if self.cloud == "aws" and path == "/latest/api/token" and method == "PUT":
            if not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return 400, {}, b""
            return 200, {"Content-Type": "text/plain"}, self._token.encode()
        if self.cloud == "aws" and path == "/latest/dynamic/instance-identity/document":
            if headers.get("X-aws-ec2-metadata-token") != self._token:
                return 401, {}, b""  # IMDSv2 only: no token, no answer
            return 200, json_type, body
        if self.cloud == "gcp" and path.startswith("/computeMetadata/v1/"):
            if headers.get("Metadata-Flavor") != "Google":
                return 403, {}, b""
            return 200, {**json_type, "Metadata-Flavor": "Google"}, body
        if self.cloud == "azure" and path.startswith("/metadata/instance"):
            if headers.get("Metadata") != "true":
                return 400, json_type, b'{"error": "Bad request. Required metadata header"}'
            return 200, json_type, body
        return 404, {}, b""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                server.requests.append(f"{self.command} {self.path}")
                status, headers, data = server._route(self.command, self.path, self.headers)
                server._answer(self, status, headers, data)

            do_GET = do_PUT = _any

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler
