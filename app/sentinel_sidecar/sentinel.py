"""Sentinel API client: register a run, refresh its upload credentials, finish it."""

from __future__ import annotations

import os
import platform
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sentinel_sidecar.config import Settings

if TYPE_CHECKING:
    import requests

log = structlog.get_logger(__name__)

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
    region: str | None = None

    def seconds_left(self, now: float) -> float:
        """Seconds until expiry at wall time `now`."""
        return self.expires_at.timestamp() - now

    @classmethod
    def from_api(cls, data: object) -> Credentials:
        """Parse `upload_credentials`; `expires_at` or `expiration`, ISO-8601 with Z or offset."""
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
        self._base_backoff = base_backoff
        self._max_backoff = max_backoff
        if token is None and token_file is not None:
            self._token = self._read_token_file()

    def _read_token_file(self) -> str | None:
        if self._token_file is None:
            return None
        try:
            return self._token_file.read_text().strip() or None
        except OSError as exc:
            log.error("token_file_unreadable", path=str(self._token_file), error=exc.strerror)
            return None

    def register_run(self, body: Mapping[str, Any], deadline: float) -> Registration:
        """`POST /runs`."""
        data = self._post("/runs", body, deadline)
        try:
            if not data.get("run_id"):
                raise SentinelError("register response lacks run_id")
            prefix = data.get("upload_uri_prefix")
            if not isinstance(prefix, str) or not prefix.startswith("s3://"):
                raise SentinelError(f"register response has a bad upload_uri_prefix {prefix!r}")
            return Registration(
                run_id=str(data["run_id"]),
                upload_uri_prefix=prefix,
                credentials=Credentials.from_api(data.get("upload_credentials")),
            )
        except SentinelError as exc:
            # The service may have created a run all the same: report it, and do not register
            # again for a while, so such runs stay rare.
            log.error("register_answer_rejected", error=str(exc), run_id=data.get("run_id"),
                      retry_in_s=REJECTED_ANSWER_BACKOFF)  # fmt: skip
            raise SentinelError(str(exc), retry_after=REJECTED_ANSWER_BACKOFF) from exc

    def refresh_credentials(self, run_id: str, deadline: float) -> Credentials:
        """`POST /runs/{run_id}/refresh-credentials`."""
        data = self._post(f"/runs/{run_id}/refresh-credentials", None, deadline)
        if "upload_credentials" not in data:
            raise SentinelError("refresh response lacks upload_credentials")
        return Credentials.from_api(data["upload_credentials"])

    def finish_run(self, run_id: str, body: Mapping[str, Any], deadline: float) -> dict[str, Any]:
        """`POST /runs/{run_id}/finish`."""
        return self._post(f"/runs/{run_id}/finish", body, deadline)

    def _post(self, path: str, body: Mapping[str, Any] | None, deadline: float) -> dict[str, Any]:
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
                    return self._json(response, path)
                error = SentinelError(
                    f"POST {path}: HTTP {response.status_code}: {response.text[:500]}",
                    response.status_code,
                )
                if response.status_code == 401 and reread_token:
                    reread_token = False  # the Secret may have been rotated; once per call
                    self._token = self._read_token_file()
                    continue
                if response.status_code not in _RETRY_STATUSES:
                    log.error("sentinel_request_rejected", path=path, status=response.status_code,
                              message=response.text[:500])  # fmt: skip
                    raise error
                wait = _retry_after(response)
                if wait is not None and wait > RETRY_AFTER_CAP:
                    wait = RETRY_AFTER_CAP
            if wait is not None and self._monotonic() + wait >= deadline:
                log.warning("sentinel_retry_after", path=path, status=error.status,
                            wait_s=round(wait, 1))  # fmt: skip
                error.retry_after = wait
                raise error
            if wait is None:
                ceiling = min(self._max_backoff, self._base_backoff * 2 ** (attempt - 1))
                wait = random.uniform(ceiling / 2, ceiling)
            if self._monotonic() + wait >= deadline:
                raise error
            log.warning("sentinel_request_retry", path=path, attempt=attempt, wait_s=round(wait, 2),
                        error=str(error))  # fmt: skip
            self._sleep(wait)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    @staticmethod
    def _json(response: requests.Response, path: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            raise SentinelError(f"POST {path}: response is not JSON") from exc
        if not isinstance(data, dict):
            raise SentinelError(f"POST {path}: response is not a JSON object")
        return data


def host_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    """The `host_*` fields: pod/host name, node name, vCPUs, memory, CPU model. No probing."""
    import psutil  # here, once per run: the sampling path does not need its ~1 MiB of imports

    return {
        "host_id": environ.get("NODE_NAME"),
        "host_hostname": environ.get("POD_NAME") or socket.gethostname(),
        "host_ip": environ.get("HOST_IP") or environ.get("POD_IP"),
        "host_vcpus": psutil.cpu_count(logical=True),
        "host_cpu_model": _cpu_model(),
        "host_memory_mib": round(psutil.virtual_memory().total / 1024 / 1024),
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def register_body(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The flat `POST /runs` body: metadata, host and configured cloud fields; no nulls, no pid.

    `external_run_id` defaults to the pod's UID (`POD_UID` from the Downward API): a register
    retried after a lost answer may create a second run, and the UID tells them apart."""
    environ = os.environ if environ is None else environ
    body: dict[str, Any] = {**settings.metadata(), **host_fields(environ), **settings.cloud()}
    body.setdefault("external_run_id", environ.get("POD_UID"))
    return {key: value for key, value in body.items() if value is not None}
