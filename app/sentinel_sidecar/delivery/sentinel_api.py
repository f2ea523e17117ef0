"""The Sentinel API's HTTP client: register a run, refresh its upload credentials, finish it.
Each call is one attempt (a 401 re-reads a rotated token file and asks once more); failures
go up with their status and `Retry-After`, and `delivery/retry.py` decides what follows."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sentinel_sidecar.delivery.retry import USER_AGENT, request_timeouts

if TYPE_CHECKING:
    import requests

log = structlog.get_logger(__name__)


# After a register answer the agent cannot use, wait this long before registering again: each
# attempt may leave a run behind on the service.
REJECTED_ANSWER_BACKOFF = 120.0


class SentinelError(Exception):
    """The API answered with an error, or could not be reached before the deadline.

    `status`: the HTTP status (None: no answer); `retry_after`: seconds the caller should wait
    before the next attempt, when the service asked for it (Retry-After) or its answer could
    not be used."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Credentials:
    """Temporary S3 upload credentials."""

    access_key: str
    secret_key: str
    session_token: str
    expires_at: datetime
    expires_in: float  # seconds from the answer to the expiry, by the server's own clock
    answered: float  # monotonic time the answer arrived
    region: str | None = None

    def seconds_left(self, monotonic_now: float) -> float:
        """Seconds until expiry: judged from what the server said relative to when it said it,
        so a local wall clock that is off (or steps) changes nothing."""
        return self.expires_in - (monotonic_now - self.answered)

    @classmethod
    def from_api(
        cls, data: object, *, server_time: float | None = None, answered: float | None = None
    ) -> Credentials:
        """Parse `upload_credentials`; `expires_at` or `expiration`, ISO-8601 with Z or offset.
        `server_time`: the answer's `Date` (UNIX time), else the local clock stands in."""
        if not isinstance(data, Mapping):
            raise SentinelError(f"upload_credentials malformed: {type(data).__name__}")
        expiry = data.get("expires_at") or data.get("expiration")
        try:
            expires_at = datetime.fromisoformat(str(expiry).replace("Z", "+00:00"))
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            return cls(
                access_key=str(data["access_key"]),
                secret_key=str(data["secret_key"]),
                session_token=str(data["session_token"]),
                expires_at=expires_at,
                expires_in=expires_at.timestamp() - (server_time or time.time()),
                answered=time.monotonic() if answered is None else answered,
                region=data.get("region"),
            )
        except (KeyError, ValueError) as exc:
            raise SentinelError(f"upload_credentials malformed: missing or bad {exc}") from exc


@dataclass(frozen=True)
class Registration:
    """What `POST /runs` hands back."""

    run_id: str
    upload_uri_prefix: str
    credentials: Credentials


@dataclass(frozen=True)
class Processing:
    """What the finish answer says of the run's data: the service's ingestion of it."""

    status: str | None = None  # `completed`, ...
    rows: int | None = None
    files: int | None = None
    error: str | None = None  # set when the data was not ingested

    @classmethod
    def from_answer(cls, data: Mapping[str, Any]) -> Processing:
        """The `processing` object of a finish answer; what is missing or of another type
        stays None."""
        found = data.get("processing")
        if not isinstance(found, Mapping):
            return cls()

        def whole(name: str) -> int | None:
            value = found.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        status, error = found.get("status"), found.get("error")
        return cls(
            status=str(status) if status is not None else None,
            rows=whole("rows"),
            files=whole("files"),
            error=str(error) if error else None,
        )


@dataclass(frozen=True)
class _Answer:
    """A JSON answer and when it was given: the server's `Date` and the local monotonic time."""

    data: dict[str, Any]
    server_time: float | None
    answered: float

    def credentials(self, data: object) -> Credentials:
        """`upload_credentials` of this answer, their lifetime by the server's clock."""
        return Credentials.from_api(data, server_time=self.server_time, answered=self.answered)


def _date(response: requests.Response) -> float | None:
    from email.utils import parsedate_to_datetime  # Sentinel mode only (~10 ms at start)

    try:
        return parsedate_to_datetime(response.headers["Date"]).timestamp()
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class SentinelClient:
    """One `requests.Session`; one attempt per call, its timeouts cut by the call's deadline
    (the shutdown budget)."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        token_file: Path | None = None,
        *,
        session: requests.Session | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        secret: Callable[..., None] = lambda *values: None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._token_file = token_file
        if session is None:
            # Imported here: requests costs ~16 MiB of RSS, which local mode does not need.
            import requests

            session = requests.Session()
        self._session = session
        self._monotonic = monotonic
        self._secret = secret  # told the token read from the file, so the log redacts it
        if token is None and token_file is not None:
            self._token = self._read_token_file()

    def _read_token_file(self) -> str | None:
        if self._token_file is None:
            return None
        try:
            token = self._token_file.read_text().strip() or None
        except OSError as exc:
            log.error("token_file_unreadable", path=str(self._token_file), error=exc.strerror)
            return None
        self._secret(token)
        return token

    def register_run(self, body: Mapping[str, Any], deadline: float) -> Registration:
        """`POST /runs`."""
        answer = self._post("/runs", body, deadline)
        data = answer.data
        try:
            if not data.get("run_id"):
                raise SentinelError("register response lacks run_id")
            prefix = data.get("upload_uri_prefix")
            if not isinstance(prefix, str) or not prefix.startswith("s3://"):
                raise SentinelError(f"register response has a bad upload_uri_prefix {prefix!r}")
            return Registration(
                run_id=str(data["run_id"]),
                upload_uri_prefix=prefix,
                credentials=answer.credentials(data.get("upload_credentials")),
            )
        except SentinelError as exc:
            # The service may have created a run all the same: report it, and do not register
            # again for a while, so such runs stay rare.
            log.error("register_answer_rejected", error=str(exc), run_id=data.get("run_id"),
                      retry_in_s=REJECTED_ANSWER_BACKOFF)  # fmt: skip
            raise SentinelError(str(exc), retry_after=REJECTED_ANSWER_BACKOFF) from exc

    def refresh_credentials(self, run_id: str, deadline: float) -> Credentials:
        """`POST /runs/{run_id}/refresh-credentials`."""
        answer = self._post(f"/runs/{run_id}/refresh-credentials", None, deadline)
        if "upload_credentials" not in answer.data:
            raise SentinelError("refresh response lacks upload_credentials")
        return answer.credentials(answer.data["upload_credentials"])

    def finish_run(self, run_id: str, body: Mapping[str, Any], deadline: float) -> Processing:
        """`POST /runs/{run_id}/finish`; what the service says of the data's ingestion."""
        return Processing.from_answer(self._post(f"/runs/{run_id}/finish", body, deadline).data)

    def _post(self, path: str, body: Mapping[str, Any] | None, deadline: float) -> _Answer:
        import requests

        url = self.base_url + path
        reread_token = self._token_file is not None
        while True:
            left = deadline - self._monotonic()
            if left <= 0:
                raise SentinelError(f"POST {path}: no answer before the deadline")
            try:
                response = self._session.post(
                    url, json=body, headers=self._headers(), timeout=request_timeouts(left)
                )
            except requests.RequestException as exc:
                raise SentinelError(f"POST {path}: {type(exc).__name__}: {exc}") from exc
            if response.ok:
                return _Answer(self._json(response, path), _date(response), self._monotonic())
            if response.status_code == 401 and reread_token:
                reread_token = False  # the Secret may have been rotated; once per call
                self._token = self._read_token_file()
                continue
            log.debug("sentinel_request_failed", path=path, status=response.status_code,
                      message=response.text[:500])  # fmt: skip
            raise SentinelError(
                f"POST {path}: HTTP {response.status_code}: {response.text[:500]}",
                response.status_code,
                _retry_after(response),
            )

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    @staticmethod
    def _json(response: requests.Response, path: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise SentinelError(f"POST {path}: response is not JSON") from exc
        if not isinstance(data, dict):
            raise SentinelError(f"POST {path}: response is not a JSON object")
        return data


def register_body(values: Mapping[str, Any]) -> dict[str, Any]:
    """The flat `POST /runs` body from the run's identity values: no nulls, no pid, `tags` an
    object of strings (the service's wire contract).

    `external_run_id` defaults to the pod's UID: a register retried after a lost answer may
    create a second run, and the UID tells them apart."""
    allowed = set(_REGISTER_FIELDS)
    return {name: value for name, value in values.items() if name in allowed}


_REGISTER_FIELDS = (
    "project_name", "job_name", "stage_name", "task_name", "team", "env", "language",
    "orchestrator", "executor", "external_run_id", "container_image", "command", "tags",
    "host_id", "host_hostname", "host_ip", "host_server_allocation", "host_vcpus",
    "host_cpu_model", "host_memory_mib", "host_gpu_model", "host_gpu_count",
    "host_gpu_memory_mib", "host_storage_gb", "cloud_vendor_id", "cloud_account_id",
    "cloud_region_id", "cloud_zone_id", "cloud_instance_type",
)  # fmt: skip
