"""The Sentinel API's HTTP client: register a run, refresh its upload credentials, finish it."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sentinel_sidecar import __version__
from sentinel_sidecar.delivery.retry import Backoff

if TYPE_CHECKING:
    import requests

log = structlog.get_logger(__name__)

USER_AGENT = f"sentinel-sidecar/{__version__}"  # on every call, so the service can tell versions

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_AFTER_CAP = 600.0  # the longest Retry-After honoured, in seconds
# After a register answer the agent cannot use, wait this long before registering again: each
# attempt may leave a run behind on the service.
REJECTED_ANSWER_BACKOFF = 120.0


class SentinelError(Exception):
    """The API answered with an error, or could not be reached before the deadline.

    `retry_after`: seconds the caller should wait before the next attempt, when the service
    asked for it (Retry-After) or its answer could not be used."""

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after

    @property
    def is_auth(self) -> bool:
        """401/403: the token is wrong or lacks rights; retrying soon will not help."""
        return self.status in (401, 403)


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
class _Answer:
    """A JSON answer and when it was given: the server's `Date` and the local monotonic time."""

    data: dict[str, Any]
    server_time: float | None
    answered: float

    def credentials(self, data: object) -> Credentials:
        """`upload_credentials` of this answer, their lifetime by the server's clock."""
        return Credentials.from_api(data, server_time=self.server_time, answered=self.answered)


def _date(response: requests.Response) -> float | None:
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
    """One `requests.Session`; 5xx, 429 and connection errors retried with backoff and jitter.

    Retries are a loop here rather than urllib3's Retry because every call has a deadline (the
    shutdown budget) that also cuts each request's timeout, and a 401 re-reads the token file.
    """

    def __init__(
        self,
        base_url: str,
        token: str | None,
        token_file: Path | None = None,
        *,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        base_backoff: float = 0.5,
        max_backoff: float = 30.0,
        rng: random.Random | None = None,
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
        self._sleep = sleep
        self._monotonic = monotonic
        self._retry = Backoff(base=base_backoff, ceiling=max_backoff, rng=rng or random.Random())
        self._secret = secret  # told the token read from the file, so the log redacts it
        self._unavailable_since: float | None = None
        self._failed_attempts = 0
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

    def finish_run(self, run_id: str, body: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        """`POST /runs/{run_id}/finish`."""
        return self._post(f"/runs/{run_id}/finish", body, deadline).data

    def _post(self, path: str, body: Mapping[str, Any] | None, deadline: float) -> _Answer:
        import requests

        url = self.base_url + path
        attempt = 0
        reread_token = self._token_file is not None
        while True:
            attempt += 1
            left = deadline - self._monotonic()
            if left <= 0:
                raise SentinelError(f"POST {path}: no answer before the deadline")
            timeout = (min(CONNECT_TIMEOUT, left), min(READ_TIMEOUT, left))
            wait: float | None
            try:
                response = self._session.post(
                    url, json=body, headers=self._headers(), timeout=timeout
                )
            except requests.RequestException as exc:
                error = SentinelError(f"POST {path}: {type(exc).__name__}: {exc}")
                wait = None
            else:
                if response.ok:
                    self._available()
                    return _Answer(self._json(response, path), _date(response), self._monotonic())
                error = SentinelError(
                    f"POST {path}: HTTP {response.status_code}: {response.text[:500]}",
                    response.status_code,
                )
                if response.status_code == 401 and reread_token:
                    reread_token = False  # the Secret may have been rotated; once per call
                    self._token = self._read_token_file()
                    continue
                if response.status_code not in _RETRY_STATUSES:
                    log.debug("sentinel_request_rejected", path=path, status=response.status_code,
                              message=response.text[:500])  # fmt: skip
                    raise error
                wait = _retry_after(response)
                if wait is not None and wait > RETRY_AFTER_CAP:
                    wait = RETRY_AFTER_CAP
            self._unavailable(path, error)
            if wait is not None and self._monotonic() + wait >= deadline:
                log.warning("sentinel_retry_after", path=path, status=error.status,
                            wait_s=round(wait, 1))  # fmt: skip
                error.retry_after = wait
                raise error
            if wait is None:
                wait = self._retry.delay(attempt)
            if self._monotonic() + wait >= deadline:
                raise error
            log.debug("sentinel_request_retry", path=path, attempt=attempt, wait_s=round(wait, 2),
                      error=str(error))  # fmt: skip
            self._sleep(wait)

    def _unavailable(self, path: str, error: SentinelError) -> None:
        """One warning when the API starts failing, not one per attempt."""
        self._failed_attempts += 1
        if self._unavailable_since is None:
            self._unavailable_since = self._monotonic()
            log.warning("sentinel_api_unavailable", path=path, status=error.status,
                        error=str(error))  # fmt: skip

    def _available(self) -> None:
        if self._unavailable_since is not None:
            log.info("sentinel_api_recovered", failed_attempts=self._failed_attempts,
                     down_s=round(self._monotonic() - self._unavailable_since, 1))  # fmt: skip
        self._unavailable_since = None
        self._failed_attempts = 0

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
