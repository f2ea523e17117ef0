"""Objects in S3: `S3Store` puts under a prefix (one boto3 client per credential set), and
`S3Destination`, the direct-S3 mode (the pod's own AWS credentials, `run.json` at the end)."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import structlog

from sentinel_sidecar.delivery.destination import (
    DestinationKind,
    DestinationStatus,
    RunSummary,
    Wiring,
)
from sentinel_sidecar.delivery.retry import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    DeliveryError,
    ErrorKind,
    http_error_kind,
)
from sentinel_sidecar.setting import TEXT, URL, Rule, setting

if TYPE_CHECKING:
    from sentinel_sidecar.delivery.sentinel_api import Credentials
    from sentinel_sidecar.spool.state import State
    from sentinel_sidecar.spool.store import Spool

log = structlog.get_logger(__name__)

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/prefix` as (bucket, prefix without slashes at the ends); ValueError if bad."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not _BUCKET.match(bucket):
        raise ValueError(f"{uri!r} has no valid bucket name")
    prefix = prefix.strip("/")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise ValueError(f"{uri!r} has an empty, '.' or '..' path segment")
    return bucket, prefix


def _s3_uri(value: Any) -> str:
    text = TEXT.parse(value)
    parse_s3_uri(text)
    return text


@dataclass(frozen=True)
class S3Settings:
    """Direct S3 mode, and the S3 that Sentinel mode uploads to."""

    TITLE: ClassVar[str] = "Direct S3 mode"

    s3_uri: str | None = setting(
        None,
        Rule("str", _s3_uri, "an s3://bucket/prefix URI"),
        "direct S3 mode: `s3://bucket/prefix` (boto3's default credentials)",
    )
    s3_endpoint_url: str | None = setting(None, URL, "S3-compatible endpoint (MinIO, ...)")
    aws_region: str | None = setting(
        None,
        TEXT,
        "region for S3 when the credentials name none (else the bucket's own, by HeadBucket)",
    )


# S3 answers these when temporary credentials expired or were replaced; a renewal fixes them.
CREDENTIAL_ERRORS = frozenset(
    {"ExpiredToken", "InvalidToken", "InvalidAccessKeyId", "AccessDenied"}
)


_SESSION: Any = None
_SESSION_LOCK = threading.Lock()


def _new_client(**options: Any) -> Any:
    """An S3 client from the process's one boto3 session (made under a lock: a session is not
    safe to share between threads making clients). A new session per client would load S3's
    service model again at every credential refresh (~100 ms of CPU and tens of MiB until
    collected)."""
    global _SESSION
    with _SESSION_LOCK:
        if _SESSION is None:
            # Imported here: boto3 costs ~25 MiB and most of start-up; local mode needs none.
            import boto3

            _SESSION = boto3.session.Session()
        return _SESSION.client("s3", **options)


class S3Store:
    """Objects `{prefix}/{name}`. Without explicit credentials boto3's default chain is used
    (IRSA, instance profile, env), which renews itself.

    Each put is one attempt: retries and backoff are the upload worker's, and its deadline
    bounds the whole call (boto3's timeouts bound each socket read only)."""

    def __init__(self, uri: str, *, region: str | None, endpoint_url: str | None) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self._region = region
        self._endpoint_url = endpoint_url
        self._located = False
        self._credentials: Credentials | None = None
        self._client: Any = None

    def use_credentials(self, credentials: Credentials) -> None:
        """Switch to new temporary credentials (the client is rebuilt on next use)."""
        self._credentials = credentials
        self._region = credentials.region or self._region
        self._client = None

    def locate(self) -> None:
        """Sign for the bucket's region: the credentials' region, else the bucket's own
        (HeadBucket answers it even when the request is refused), else the configured one."""
        if self._located:
            return
        source = "settings"
        if self._credentials is not None and self._credentials.region:
            region: str | None = self._credentials.region
            source = "credentials"
        else:
            region = self._bucket_region()
            if region:
                source = "bucket"
        if region and region != self._region:
            self._region = region
            self._client = None
        self._located = True
        log.info("s3_region", bucket=self.bucket, region=self._region, source=source)

    def _bucket_region(self) -> str | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = self._get_client().head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            answer = exc.response
        except BotoCoreError as exc:
            raise DeliveryError(f"HeadBucket s3://{self.bucket}: {exc}") from exc
        headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region")
        return str(region) if region else None

    def _get_client(self) -> Any:
        if self._client is None:
            from botocore.config import Config

            config = Config(
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"mode": "standard", "max_attempts": 1},
                s3={"addressing_style": "path"} if self._endpoint_url else None,
            )
            credentials = self._credentials
            self._client = _new_client(
                region_name=self._region,
                endpoint_url=self._endpoint_url,
                aws_access_key_id=credentials.access_key if credentials else None,
                aws_secret_access_key=credentials.secret_key if credentials else None,
                aws_session_token=credentials.session_token if credentials else None,
                config=config,
            )
        return self._client

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, body: bytes, content_type: str) -> str:
        """One PUT of `{prefix}/{name}`; its `s3://` URI. Never `Content-Encoding`: with it,
        S3 clients unpack the object on download and a `.csv.gz` is no longer gzip."""
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(name)
        where = f"s3://{self.bucket}/{key}"
        try:
            self._get_client().put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            kind = ErrorKind.CREDENTIALS if code in CREDENTIAL_ERRORS else http_error_kind(status)
            raise DeliveryError(f"put {where}: {code}: {exc}", kind) from exc
        except BotoCoreError as exc:
            raise DeliveryError(f"put {where}: {exc}") from exc
        return where


class S3Destination:
    """Direct-S3 mode: chunks and `run.json` under `{s3_uri}/{run_id}`, where the run id is
    the pod's name and the run's start time."""

    inline_max_bytes = 0
    kept_bytes = 0

    def __init__(
        self, s3_uri: str, *, name: str, region: str | None, endpoint_url: str | None
    ) -> None:
        parse_s3_uri(s3_uri)
        self.s3_uri = s3_uri.rstrip("/")
        self._name = name
        self._region = region
        self._endpoint_url = endpoint_url
        self._store: S3Store | None = None

    def open(self, state: State, deadline: float) -> State:
        """Name the run (or resume the named one) and find the bucket's region."""
        started = time.gmtime(state.started_at)
        run_id = state.run_id or f"{self._name}-{time.strftime('%Y%m%dT%H%M%SZ', started)}"
        prefix = f"{self.s3_uri}/{run_id}"
        store = S3Store(prefix, region=self._region, endpoint_url=self._endpoint_url)
        store.locate()
        self._store = store
        return dataclasses.replace(state, run_id=run_id, upload_uri_prefix=prefix)

    def put_chunk(self, name: str, body: bytes, deadline: float) -> str:
        """Upload the chunk `name`; its `s3://` URI."""
        return self._opened().put(name, body, "application/gzip")

    def close(self, summary: RunSummary, spool: Spool, deadline: float) -> str | None:
        """Upload `run.json` next to the chunks."""
        return self._opened().put("run.json", summary.to_json(), "application/json")

    def status(self) -> DestinationStatus:
        """Ready once the bucket's region is known."""
        return DestinationStatus(ready=self._store is not None)

    def _opened(self) -> S3Store:
        if self._store is None:
            raise DeliveryError("the S3 destination is not open yet")
        return self._store


def _build(settings: S3Settings, wiring: Wiring) -> S3Destination:
    assert settings.s3_uri is not None
    return S3Destination(
        settings.s3_uri,
        name=wiring.run_name,
        region=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
    )


def _chosen(settings: S3Settings) -> bool:
    return settings.s3_uri is not None


KIND = DestinationKind("s3", S3Settings, _chosen, _build)
