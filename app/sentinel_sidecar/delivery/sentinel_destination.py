"""The Sentinel destination: register (or resume) the run on the API, upload chunks to the
run's S3 prefix with the short-lived credentials the API hands out, renewed before they expire,
and finish the run with the workload's exit code. Loaded only in Sentinel mode (`sentinel.py`
declares the mode)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from sentinel_sidecar.delivery.destination import DestinationStatus, RunSummary, Wiring
from sentinel_sidecar.delivery.retry import DeliveryError, ErrorKind, http_error_kind
from sentinel_sidecar.delivery.s3 import S3Store
from sentinel_sidecar.delivery.sentinel_api import (
    Credentials,
    SentinelClient,
    SentinelError,
    register_body,
)
from sentinel_sidecar.telemetry import Telemetry

if TYPE_CHECKING:
    from sentinel_sidecar.spool.state import State
    from sentinel_sidecar.spool.store import Spool

log = structlog.get_logger(__name__)

REFRESH_MARGIN = 300.0  # renew the credentials when fewer seconds than this are left


def _delivery_error(exc: SentinelError) -> DeliveryError:
    kind = ErrorKind.TRANSIENT if exc.status is None else http_error_kind(exc.status)
    return DeliveryError(str(exc), kind, exc.retry_after)


class SentinelDestination:
    """One run on the Sentinel API; chunks through an `S3Store` on the run's prefix."""

    def __init__(
        self,
        client: SentinelClient,
        register_body: Callable[[float], Mapping[str, Any]],
        *,
        api_url: str,
        inline_max_bytes: int,
        region: str | None,
        endpoint_url: str | None,
        telemetry: Telemetry,
        secret: Callable[..., None] = lambda *values: None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.inline_max_bytes = inline_max_bytes
        self.kept_bytes = 0
        self._register_body = register_body  # the body, ready before the deadline given
        self._api_url = api_url.rstrip("/")
        self._region = region
        self._endpoint_url = endpoint_url
        self._telemetry = telemetry
        self._secret = secret
        self._monotonic = monotonic
        self._run_id: str | None = None
        self._store: S3Store | None = None
        self._credentials: Credentials | None = None
        self._stale = False  # S3 refused the credentials: renew before the next put

    def open(self, state: State, deadline: float) -> State:
        """Register a new run, or resume the one in `state` with fresh credentials."""
        try:
            if state.run_id and state.upload_uri_prefix:
                credentials = self.client.refresh_credentials(state.run_id, deadline)
                log.info("run_resumed_on_api", run_id=state.run_id, seq=state.seq)
            else:
                body = self._register_body(deadline)
                registration = self.client.register_run(body, deadline)
                state = dataclasses.replace(
                    state,
                    run_id=registration.run_id,
                    upload_uri_prefix=registration.upload_uri_prefix,
                )
                credentials = registration.credentials
                log.info("run_registered", run_id=state.run_id, prefix=state.upload_uri_prefix)
        except SentinelError as exc:
            raise _delivery_error(exc) from exc
        assert state.upload_uri_prefix is not None and state.run_id is not None
        try:
            store = S3Store(
                state.upload_uri_prefix, region=self._region, endpoint_url=self._endpoint_url
            )
        except ValueError as exc:
            raise DeliveryError(
                f"the API sent a bad upload_uri_prefix: {exc}", ErrorKind.REJECTED
            ) from exc
        self._secret(credentials.secret_key, credentials.session_token)
        store.use_credentials(credentials)
        store.locate(deadline)
        self._credentials = credentials
        self._store = store
        self._run_id = state.run_id
        return state

    def put_chunk(self, name: str, body: bytes, deadline: float) -> str:
        """Upload the chunk `name`, renewing the credentials first when they are (nearly) spent."""
        store = self._opened()
        left = self._seconds_left()
        if self._stale or (left is not None and left < REFRESH_MARGIN):
            self._refresh(deadline)
        try:
            return store.put(name, body, "application/gzip", deadline)
        except DeliveryError as exc:
            if exc.kind is ErrorKind.CREDENTIALS:
                self._stale = True
            raise

    def _refresh(self, deadline: float) -> None:
        assert self._store is not None and self._run_id is not None
        try:
            credentials = self.client.refresh_credentials(self._run_id, deadline)
        except SentinelError as exc:
            raise _delivery_error(exc) from exc
        self._secret(credentials.secret_key, credentials.session_token)
        self._store.use_credentials(credentials)
        self._credentials = credentials
        self._stale = False
        log.info("credentials_refreshed", expires_at=credentials.expires_at.isoformat())

    def _seconds_left(self) -> float | None:
        if self._credentials is None:
            return None
        return self._credentials.seconds_left(self._monotonic())

    def close(self, summary: RunSummary, spool: Spool, deadline: float) -> str | None:
        """Finish the run with its chunks' URIs or, for a small run, the CSV inline. Never with
        no data: then the run stays open and the spool keeps every row for a restart."""
        if self._run_id is None:
            log.error("run_not_registered", rows_in_spool=summary.rows, spool=str(spool.directory))
            return None
        body: dict[str, Any] = {
            "run_status": summary.run_status,
            "finished_at": summary.finished_at,
        }
        if summary.exit_code is not None:
            body["exit_code"] = summary.exit_code
        if summary.inline:
            body["data_source"] = "inline"
            body["data_csv"] = spool.read_all().decode()
        elif summary.uris:
            body["data_source"] = "s3"
            body["data_uris"] = list(summary.uris)
        else:
            log.error("run_not_finished", reason="no chunk uploaded and too large to go inline",
                      rows_in_spool=summary.rows, spool=str(spool.directory))  # fmt: skip
            return None
        try:
            processing = self.client.finish_run(self._run_id, body, deadline)
        except SentinelError as exc:
            raise _delivery_error(exc) from exc
        log.info("run_finished_on_api", data_source=body["data_source"],
                 processing_status=processing.status, processing_rows=processing.rows,
                 processing_files=processing.files)  # fmt: skip
        if processing.error:
            self._telemetry.ingestion_errors += 1
            log.error("run_data_not_ingested", error=processing.error)
        return f"{self._api_url}/runs/{self._run_id}"

    def status(self) -> DestinationStatus:
        """Ready once registered with credentials in hand."""
        left = self._seconds_left()
        return DestinationStatus(ready=self._store is not None, credentials_left=left)

    def _opened(self) -> S3Store:
        if self._store is None:
            raise DeliveryError("the run is not registered yet")
        return self._store


class _Settings(Protocol):
    """What Sentinel mode is built from (of `config.Settings`)."""

    @property
    def sentinel_api_url(self) -> str: ...
    @property
    def sentinel_api_token(self) -> str | None: ...
    @property
    def sentinel_api_token_file(self) -> Path | None: ...
    @property
    def inline_max_bytes(self) -> int: ...
    @property
    def aws_region(self) -> str | None: ...
    @property
    def s3_endpoint_url(self) -> str | None: ...


def build(settings: _Settings, wiring: Wiring) -> SentinelDestination:
    """Sentinel mode as the settings describe it; the register body made from the run's
    identity (`sentinel_api.register_body`)."""
    client = SentinelClient(
        settings.sentinel_api_url,
        settings.sentinel_api_token,
        settings.sentinel_api_token_file,
        secret=wiring.secret,
    )
    return SentinelDestination(
        client,
        lambda deadline: register_body(wiring.identity(deadline)),
        api_url=settings.sentinel_api_url,
        inline_max_bytes=settings.inline_max_bytes,
        region=settings.aws_region,
        endpoint_url=settings.s3_endpoint_url,
        telemetry=wiring.telemetry,
        secret=wiring.secret,
    )
