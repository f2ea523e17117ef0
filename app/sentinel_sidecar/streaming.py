"""The upload loop: next chunk from the spool cursor, gzip, deliver, then move the cursor."""

from __future__ import annotations

import dataclasses
import gzip
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from sentinel_sidecar.deadline import DeadlineExceeded, call_before
from sentinel_sidecar.health import Stats
from sentinel_sidecar.log import RunContext
from sentinel_sidecar.sentinel import Credentials, SentinelClient, SentinelError
from sentinel_sidecar.sinks import CredentialsRejected, S3Sink, Sink, SinkError
from sentinel_sidecar.spool import Spool, State, StateStore

log = structlog.get_logger(__name__)

REFRESH_MARGIN = 300.0  # refresh credentials when fewer seconds than this are left
CALL_TIMEOUT = 60.0  # budget of one API call (with its retries) outside shutdown


def gzip_chunk(header: bytes, rows: bytes) -> bytes:
    """A standalone gzipped CSV: the header line, then whole rows."""
    return gzip.compress(header + rows, compresslevel=6, mtime=0)


class SentinelSink:
    """Sentinel mode: registers (or resumes) the run, keeps its STS credentials fresh, and
    uploads through an `S3Sink` rebuilt for each credential set."""

    def __init__(
        self,
        client: SentinelClient,
        register_body: Mapping[str, Any],
        *,
        region: str | None,
        endpoint_url: str | None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.register_body = dict(register_body)
        self.run_id: str | None = None
        self.deadline: float | None = None  # set at shutdown: every call ends before it
        self._region = region
        self._endpoint_url = endpoint_url
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._s3: S3Sink | None = None
        self._credentials: Credentials | None = None

    @property
    def connected(self) -> bool:
        """True once the run is registered (or resumed) and credentials are in hand."""
        return self._s3 is not None

    def _call_deadline(self) -> float:
        budget = self._monotonic() + CALL_TIMEOUT
        return budget if self.deadline is None else min(budget, self.deadline)

    def connect(self, state: State) -> State:
        """Register a new run, or resume the one in `state`; raises SentinelError."""
        if state.run_id and state.upload_uri_prefix:
            credentials = self.client.refresh_credentials(state.run_id, self._call_deadline())
            log.info("run_resumed_on_api", run_id=state.run_id, seq=state.seq)
        else:
            registration = self.client.register_run(self.register_body, self._call_deadline())
            state = dataclasses.replace(
                state,
                run_id=registration.run_id,
                upload_uri_prefix=registration.upload_uri_prefix,
            )
            credentials = registration.credentials
            log.info("run_registered", run_id=state.run_id, prefix=state.upload_uri_prefix)
        assert state.upload_uri_prefix is not None
        try:
            s3 = S3Sink(
                state.upload_uri_prefix, region=self._region, endpoint_url=self._endpoint_url
            )
        except ValueError as exc:
            raise SentinelError(f"server sent a bad upload_uri_prefix: {exc}") from exc
        s3.use_credentials(credentials)
        self._credentials = credentials
        self._s3 = s3
        self.run_id = state.run_id
        return state

    def seconds_left(self) -> float | None:
        """Seconds until the credentials expire; None before registration."""
        if self._credentials is None:
            return None
        return self._credentials.seconds_left(self._wall_clock())

    def refresh(self) -> None:
        """New credentials from the API; SinkError when that fails (the chunk waits)."""
        if self._s3 is None or self.run_id is None:
            raise SinkError("run is not registered yet")
        try:
            credentials = self.client.refresh_credentials(self.run_id, self._call_deadline())
        except SentinelError as exc:
            raise SinkError(f"credentials refresh failed: {exc}") from exc
        self._s3.use_credentials(credentials)
        self._credentials = credentials
        log.info("credentials_refreshed", expires_at=credentials.expires_at.isoformat())

    def refresh_if_due(self) -> None:
        """Refresh when fewer than REFRESH_MARGIN seconds are left."""
        left = self.seconds_left()
        if left is not None and left < REFRESH_MARGIN:
            self.refresh()

    def put_chunk(self, seq: int, body: bytes) -> str:
        """Upload with fresh credentials; on an expiry answer refresh at once and retry once."""
        if self._s3 is None:
            raise SinkError("run is not registered yet")
        self.refresh_if_due()
        try:
            return self._s3.put_chunk(seq, body)
        except CredentialsRejected as exc:
            log.warning("credentials_rejected", seq=seq, error=str(exc))
            self.refresh()
            return self._s3.put_chunk(seq, body)


class Uploader:
    """Moves spooled rows to a sink in chunks; the cursor moves only after the sink confirmed."""

    def __init__(
        self,
        spool: Spool,
        store: StateStore,
        state: State,
        sink: Sink,
        *,
        max_chunk_bytes: int,
        stats: Stats,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        context: RunContext | None = None,
    ) -> None:
        self.spool = spool
        self._context = context or RunContext()
        self.store = store
        self.state = state
        self.sink = sink
        self.max_chunk_bytes = max_chunk_bytes
        self.stats = stats
        self.failures = 0
        self._register_not_before = 0.0  # monotonic time the API asked to wait for
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._lock = threading.Lock()  # guards `state`; never held across network I/O
        self._busy = threading.Lock()  # one upload at a time
        self._closed = False  # set at shutdown: an upload that lands later is never counted
        stats.connected = not isinstance(sink, SentinelSink)

    @property
    def pending_bytes(self) -> int:
        """Spooled bytes not yet delivered."""
        return max(0, self.spool.size - self.state.offset)

    def prepare(self) -> bool:
        """Register or resume the run where the sink needs it; True when uploads can go."""
        if not isinstance(self.sink, SentinelSink):
            return True
        if self.sink.connected:
            return True
        if self._monotonic() < self._register_not_before:
            return False  # the last answer asked to wait (even at the stop: no extra run)
        try:
            state = self.sink.connect(self.state)
        except SentinelError as exc:
            event = "sentinel_auth_failed" if exc.is_auth else "sentinel_connect_failed"
            log.error(event, error=str(exc), status=exc.status, retry_after_s=exc.retry_after)
            self._register_not_before = self._monotonic() + (exc.retry_after or 0.0)
            return False
        with self._lock:
            if self._closed:
                return False
            self.store.save(state)
            self.state = state
        self._context.bind(run_id=state.run_id)
        self.stats.connected = True
        return True

    def upload_next(self, deadline: float) -> bool:
        """Deliver the next chunk before `deadline` (monotonic); False when nothing whole is
        pending. Raises SinkError, or DeadlineExceeded (the upload is abandoned, not counted)."""
        if not self._busy.acquire(timeout=max(0.0, deadline - self._monotonic())):
            raise DeadlineExceeded("an earlier upload is still in flight")
        try:
            with self._lock:
                state = self.state
                if self._closed:
                    return False
            rows = self.spool.read_chunk(state.offset, self.max_chunk_bytes)
            if not rows:
                return False
            seq = state.seq + 1
            body = gzip_chunk(self.spool.header_bytes, rows)
            uri = call_before(
                deadline,
                lambda: self.sink.put_chunk(seq, body),
                what=f"upload of chunk {seq}",
                monotonic=self._monotonic,
            )
            moved = state.after_upload(uri, state.offset + len(rows))
            with self._lock:
                if self._closed:
                    return False
                self.store.save(moved)  # disk first: the cursor in memory never runs ahead
                self.state = moved
        finally:
            self._busy.release()
        self.stats.chunks_uploaded += 1
        self.stats.last_upload_wall = self._wall_clock()
        log.info("chunk_uploaded", seq=seq, raw_bytes=len(rows), gz_bytes=len(body), uri=uri)
        return True

    def drain(self, deadline: float) -> bool:
        """Deliver the rows spooled so far before `deadline` (monotonic); True when all went.

        Rows appended while draining wait for the next cycle, so a drain never ends with a
        chunk of one or two rows.
        """
        end = self.spool.size
        while self._monotonic() < deadline:
            try:
                if self.state.offset >= end or not self.upload_next(deadline):
                    break
            except (SinkError, DeadlineExceeded) as exc:
                self.failures += 1
                self.stats.upload_failures += 1
                if self.stats.failing_since_monotonic is None:
                    self.stats.failing_since_monotonic = self._monotonic()
                log.warning("chunk_upload_failed", error=str(exc), failures=self.failures)
                return False
        done = self.state.offset >= end
        if done:
            self.failures = 0
            self.stats.failing_since_monotonic = None
        return done

    def register_wait(self) -> float:
        """Seconds before the next register may be tried (the API asked to wait)."""
        return max(0.0, self._register_not_before - self._monotonic())

    def idle_before(self, deadline: float) -> bool:
        """True when no upload is in flight, waiting for one until `deadline` at most."""
        if not self._busy.acquire(timeout=max(0.0, deadline - self._monotonic())):
            return False
        self._busy.release()
        return True

    def close(self) -> None:
        """From now on nothing moves the cursor: an abandoned upload that lands is not counted."""
        with self._lock:
            self._closed = True

    def finish(self) -> None:
        """Mark the run finished in the saved state."""
        with self._lock:
            self.state = dataclasses.replace(self.state, finished=True)
            self.store.save(self.state)


class UploadLoop(threading.Thread):
    """Wakes every `upload_interval`, early when the spool passes a threshold or credentials
    run low, registers the run if needed, and drains."""

    def __init__(
        self,
        uploader: Uploader,
        *,
        upload_interval: float,
        threshold_bytes: int,
        max_backoff: float = 300.0,
    ) -> None:
        super().__init__(name="upload-loop", daemon=True)
        self.uploader = uploader
        self.upload_interval = upload_interval
        self.threshold_bytes = threshold_bytes
        self.max_backoff = max_backoff
        self.stopping = threading.Event()
        self.wake = threading.Event()
        self._attempts = 0

    def nudge(self) -> None:
        """Called after each append: wake early when enough bytes are pending, unless the
        loop is backing off after a failure (then pending bytes must not cut the backoff
        short: during an outage every sample would retry)."""
        if self._attempts == 0 and self.uploader.pending_bytes >= self.threshold_bytes:
            self.wake.set()

    def _cycle(self, drain_due: bool) -> bool:
        """Register if needed, keep credentials fresh, and drain when due; True when all went."""
        uploader = self.uploader
        if not uploader.prepare():
            return False
        if isinstance(uploader.sink, SentinelSink):
            try:
                uploader.sink.refresh_if_due()
            except SinkError as exc:
                log.warning("credentials_refresh_failed", error=str(exc))
        if not drain_due:
            return True
        uploader.spool.sync()
        return uploader.drain(time.monotonic() + max(self.upload_interval, 30.0))

    def _backoff(self) -> float:
        self._attempts += 1
        backoff: float = min(30.0, self.upload_interval) * 2.0 ** min(self._attempts - 1, 10)
        return min(self.max_backoff, max(self.upload_interval, backoff))

    def run(self) -> None:
        next_drain = time.monotonic() + self.upload_interval
        delay = 0.0  # register at once; the first upload waits for its interval
        while not self.stopping.is_set():
            woken = self.wake.wait(delay)
            self.wake.clear()
            if self.stopping.is_set():
                return
            drain_due = woken or time.monotonic() >= next_drain
            try:
                ok = self._cycle(drain_due)
            except Exception:
                # The loop must survive anything (disk full, a bug in a sink): rows stay spooled.
                log.exception("upload_cycle_failed")
                ok = False
            now = time.monotonic()
            if ok:
                self._attempts = 0
                if drain_due:
                    next_drain = now + self.upload_interval
            else:
                next_drain = now + max(self._backoff(), self.uploader.register_wait())
            delay = max(0.0, next_drain - now)
            sink = self.uploader.sink
            left = sink.seconds_left() if isinstance(sink, SentinelSink) else None
            if left is not None:
                delay = min(delay, max(1.0, left - REFRESH_MARGIN))

    def stop(self) -> None:
        """Stop the loop; an upload it has in flight goes on (the drain waits for it)."""
        self.stopping.set()
        self.wake.set()
