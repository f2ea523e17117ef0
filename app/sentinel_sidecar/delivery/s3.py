"""Objects in S3: `S3Store` puts under a prefix, and `S3Destination`, the direct-S3 mode (the
pod's own AWS credentials, `run.json` at the end)."""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import structlog

from sentinel_sidecar.delivery.destination import (
    DestinationKind,
    DestinationStatus,
    RunSummary,
    Wiring,
)
from sentinel_sidecar.delivery.retry import (
    USER_AGENT,
    DeliveryError,
    ErrorKind,
    http_error_kind,
    request_timeouts,
)
from sentinel_sidecar.setting import TEXT, URL, Rule, setting, settings_group

if TYPE_CHECKING:
    import requests

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


HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"  # how Hive, Athena, Trino and Spark spell a null


def partition_value(value: object) -> str:
    """`value` as a Hive partition value in a key: characters other than letters, digits, `.`,
    `_` and `-` percent-encoded as Hive does; a missing value as Hive's null."""
    if value in (None, ""):
        return HIVE_NULL
    return quote(str(value), safe="-_.")


def _s3_uri(value: Any) -> str:
    text = TEXT.parse(value)
    parse_s3_uri(text)
    return text


@settings_group
class S3Settings:
    """Direct S3 mode, and the S3 that Sentinel mode uploads to."""

    TITLE: ClassVar[str] = "Direct S3 mode"

    s3_uri: str | None = setting(
        None,
        Rule("str", _s3_uri, "an s3://bucket/prefix URI"),
        "direct S3 mode: `s3://bucket/prefix` (the AWS SDKs' default credentials)",
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

SIGNING_REGION = "us-east-1"  # where an unlocated bucket is asked: S3 answers with its region


class S3Store:
    """Objects `{prefix}/{name}`, by SigV4-signed requests (botocore's signer) over one
    `requests.Session`. Without explicit credentials botocore's default chain is used (IRSA,
    instance profile, env), which renews itself.

    Not a boto3 client: building one parses S3's service model and endpoint rules, ~15 MiB of
    peak RSS for the two calls made here (HeadBucket and PutObject). Each put is one attempt:
    retries and backoff are the upload worker's, the call's deadline cuts the timeouts."""

    def __init__(self, uri: str, *, region: str | None, endpoint_url: str | None) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self._region = region
        self._endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self._located = False
        self._credentials: Credentials | None = None
        self._chain: Any = None  # botocore's credentials, when none were given
        self._http: requests.Session | None = None

    def use_credentials(self, credentials: Credentials) -> None:
        """Sign with new temporary credentials from now on."""
        self._credentials = credentials
        self._region = credentials.region or self._region

    def locate(self, deadline: float) -> None:
        """Sign for the bucket's region: the credentials' region, else the bucket's own
        (HeadBucket answers it even when the request is refused), else the configured one."""
        if self._located:
            return
        source = "settings"
        if self._credentials is not None and self._credentials.region:
            self._region = self._credentials.region
            source = "credentials"
        else:
            answer = self._request("HEAD", "", b"", {}, deadline, f"HeadBucket s3://{self.bucket}")
            region = answer.headers.get("x-amz-bucket-region")
            if region:
                self._region = region
                source = "bucket"
        self._located = True
        log.info("s3_region", bucket=self.bucket, region=self._region, source=source)

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, body: bytes, content_type: str, deadline: float) -> str:
        """One PUT of `{prefix}/{name}`; its `s3://` URI. Never `Content-Encoding`: with it,
        S3 clients unpack the object on download and a `.csv.gz` is no longer gzip."""
        key = self.key(name)
        where = f"s3://{self.bucket}/{key}"
        headers = {"Content-Type": content_type}
        response = self._request("PUT", key, body, headers, deadline, f"put {where}")
        if not response.ok:
            code = _error_code(response)
            kind = (
                ErrorKind.CREDENTIALS
                if code in CREDENTIAL_ERRORS
                else http_error_kind(response.status_code)
            )
            raise DeliveryError(f"put {where}: HTTP {response.status_code} {code}", kind)
        return where

    def _request(
        self,
        method: str,
        key: str,
        body: bytes,
        headers: dict[str, str],
        deadline: float,
        what: str,
    ) -> requests.Response:
        import requests
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest

        left = deadline - time.monotonic()
        if left <= 0:
            raise DeliveryError(f"{what}: no answer before the deadline")
        request = AWSRequest(method=method, url=self._url(key), data=body, headers=headers)
        S3SigV4Auth(self._signing_credentials(), "s3", self._region or SIGNING_REGION).add_auth(
            request
        )
        signed = request.prepare()
        if self._http is None:
            self._http = requests.Session()
            self._http.headers["User-Agent"] = USER_AGENT
        try:
            return self._http.request(
                method,
                signed.url,
                data=body,
                headers=dict(signed.headers.items()),
                timeout=request_timeouts(left),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise DeliveryError(f"{what}: {type(exc).__name__}: {exc}") from exc

    def _url(self, key: str) -> str:
        """Path-style on a custom endpoint; on AWS virtual-hosted, unless a dot in the bucket's
        name would break the TLS certificate's match."""
        path = "/" + quote(key, safe="/~") if key else ""
        if self._endpoint_url:
            return f"{self._endpoint_url}/{self.bucket}{path}"
        region = self._region or SIGNING_REGION
        host = f"s3.{region}.amazonaws.com" + (".cn" if region.startswith("cn-") else "")
        if "." in self.bucket:
            return f"https://{host}/{self.bucket}{path}"
        return f"https://{self.bucket}.{host}{path or '/'}"

    def _signing_credentials(self) -> Any:
        if self._credentials is not None:
            from botocore.credentials import ReadOnlyCredentials

            given = self._credentials
            return ReadOnlyCredentials(given.access_key, given.secret_key, given.session_token)
        if self._chain is None:
            import botocore.session

            session = botocore.session.get_session()
            self._chain = session.get_credentials()
            if self._chain is None:
                raise DeliveryError("no AWS credentials found", ErrorKind.REJECTED)
            self._region = self._region or session.get_config_variable("region")
        return self._chain.get_frozen_credentials()


def _error_code(response: requests.Response) -> str:
    """S3's error `Code` from the XML body; the reason phrase when there is none (HEAD)."""
    from xml.etree import ElementTree

    try:
        code = ElementTree.fromstring(response.content).findtext("Code")
    except ElementTree.ParseError:
        code = None
    return code or response.reason or ""


class S3Destination:
    """Direct-S3 mode: chunks and `run.json` under `{s3_uri}/job={job}/run={run_id}/`, Hive-style
    partitions a query engine can prune by job (docs/delivery.md), where the run id is the pod's
    name and the run's start time. A resumed run keeps the prefix it started with (runs of
    earlier versions: `{s3_uri}/{run_id}/`)."""

    inline_max_bytes = 0
    kept_bytes = 0

    def __init__(
        self,
        s3_uri: str,
        *,
        name: str,
        identity: Callable[[float], Mapping[str, Any]],
        region: str | None,
        endpoint_url: str | None,
    ) -> None:
        parse_s3_uri(s3_uri)
        self.s3_uri = s3_uri.rstrip("/")
        self._name = name
        self._identity = identity  # the run's identity values, by a deadline
        self._region = region
        self._endpoint_url = endpoint_url
        self._store: S3Store | None = None

    def open(self, state: State, deadline: float) -> State:
        """Name the run (or resume the named one) and find the bucket's region."""
        if state.run_id and state.upload_uri_prefix:
            run_id, prefix = state.run_id, state.upload_uri_prefix
        else:
            started = time.gmtime(state.started_at)
            run_id = f"{self._name}-{time.strftime('%Y%m%dT%H%M%SZ', started)}"
            job = self._identity(deadline).get("job_name")
            prefix = f"{self.s3_uri}/job={partition_value(job)}/run={partition_value(run_id)}"
        store = S3Store(prefix, region=self._region, endpoint_url=self._endpoint_url)
        store.locate(deadline)
        self._store = store
        return dataclasses.replace(state, run_id=run_id, upload_uri_prefix=prefix)

    def put_chunk(self, name: str, body: bytes, deadline: float) -> str:
        """Upload the chunk `name`; its `s3://` URI."""
        return self._opened().put(name, body, "application/gzip", deadline)

    def close(self, summary: RunSummary, spool: Spool, deadline: float) -> str | None:
        """Upload `run.json` next to the chunks."""
        return self._opened().put("run.json", summary.to_json(), "application/json", deadline)

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
        identity=wiring.identity,
        region=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
    )


def _chosen(settings: S3Settings) -> bool:
    return settings.s3_uri is not None


KIND = DestinationKind("s3", S3Settings, _chosen, _build)
