"""The upload side. `Uploader` moves the spool's cursor chunk by chunk through a destination;
`UploadWorker` is the one thread that drives it: when to upload, retries on the policy of
`delivery/retry.py`, and the last drain when the agent stops."""

from __future__ import annotations

import dataclasses
import gzip
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import structlog

from sentinel_sidecar.deadline import Call, DeadlineExceeded
from sentinel_sidecar.delivery.destination import Destination, DestinationStatus
from sentinel_sidecar.delivery.retry import Backoff, DeliveryError, ErrorKind, retry_until
from sentinel_sidecar.log import RunContext
from sentinel_sidecar.setting import BYTES, SECONDS_POSITIVE, number, setting, settings_group
from sentinel_sidecar.spool.durable import replace_file
from sentinel_sidecar.spool.state import Loss, State, StateStore
from sentinel_sidecar.spool.store import Spool
from sentinel_sidecar.telemetry import Telemetry

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

CALL_BUDGET = 30.0  # at least this long for one cycle's network calls outside the stop
REFUSED_DIR = "refused"  # chunks the destination refused for good, under the spool directory


@settings_group
class UploadSettings:
    """When rows are delivered, in what pieces, and for how long after a stop."""

    TITLE: ClassVar[str] = "Delivery"

    upload_interval: float = setting(
        60.0,
        SECONDS_POSITIVE,
        "seconds between chunk uploads; the spool is fsynced at least this often",
    )
    upload_threshold_bytes: int = setting(
        4 * 1024 * 1024, BYTES, "upload early when this many bytes are pending"
    )
    max_chunk_bytes: int = setting(
        8 * 1024 * 1024,
        BYTES,
        "largest raw chunk (whole rows; a longer single row still goes whole)",
    )
    max_chunk_refusals: int = setting(
        5,
        number(int, 1, "a whole number >= 1"),
        "a chunk the destination refuses for good (HTTP 400, 413, 422) this many times in a "
        "row is set aside in `<spool_dir>/refused/` and delivery goes on with the next rows",
    )
    shutdown_timeout: float = setting(
        20.0, SECONDS_POSITIVE, "seconds for the last sample, drain and finish after a stop"
    )


def gzip_chunk(header: bytes, rows: bytes) -> bytes:
    """A standalone gzipped CSV: the header line, then whole rows."""
    return gzip.compress(header + rows, compresslevel=6, mtime=0)


@dataclass(frozen=True, eq=False)
class Chunk:
    """Chunk `seq`: the rows up to spool offset `end`, gzipped. Sent again unchanged until
    acknowledged, so an abandoned attempt that lands late stores the same object."""

    seq: int
    start: int
    end: int
    raw_bytes: int
    rows: int
    body: bytes
    attempts: int = 0  # failed attempts so far
    refusals: int = 0  # of which refused for good (`permanent`), in a row


class Uploader:
    """The spool's cursor and the destination. The cursor moves only after the destination
    acknowledged a chunk, and on disk before in memory; no lock is held across network I/O.
    Network calls run through `Call` so that a deadline (or `cap`) ends the wait."""

    def __init__(
        self,
        spool: Spool,
        store: StateStore,
        state: State,
        destination: Destination,
        *,
        max_chunk_bytes: int,
        telemetry: Telemetry,
        max_chunk_refusals: int = 5,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        context: RunContext | None = None,
    ) -> None:
        self.spool = spool
        self.store = store
        self.state = state
        self.destination = destination
        self.max_chunk_bytes = max_chunk_bytes
        self.max_chunk_refusals = max_chunk_refusals
        self.telemetry = telemetry
        self.opened = False
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._context = context or RunContext()
        self._pending: Chunk | None = None
        self._calls: list[Call[Any]] = []  # started and not known to be over
        self._changed = threading.Event()  # a call ended or the cap moved
        self._cap = math.inf  # no wait goes past this monotonic time (set at the stop)
        self._lock = threading.Lock()  # guards `state` and `_closed`
        self._closed = False
        self._loss_unsaved = False

    @property
    def pending_bytes(self) -> int:
        """Spooled bytes not yet delivered."""
        return self.spool.pending(self.state.offset)

    @property
    def in_flight(self) -> bool:
        """True while a call to the destination may still take effect (abandoned ones too)."""
        return any(call.running for call in self._calls)

    def status(self) -> DestinationStatus:
        """The destination's readiness and credential time left."""
        return self.destination.status()

    def cap(self, until: float) -> None:
        """From now on stop waiting for any call at `until` (monotonic)."""
        self._cap = min(self._cap, until)
        self._changed.set()

    def open(self, deadline: float) -> None:
        """Register or resume the run (once); DeliveryError or DeadlineExceeded."""
        if self.opened:
            return
        state = self.state
        opened = self._call(lambda: self.destination.open(state, deadline), "open", deadline)
        with self._lock:
            if self._closed:
                return
            if opened != state:
                self.store.save(opened)
                self.state = opened
        self.opened = True
        if opened.run_id:
            self._context.bind(run_id=opened.run_id)

    def upload_next(self, deadline: float) -> bool:
        """Deliver the next chunk before `deadline` (monotonic); False when nothing whole is
        pending. DeliveryError, or DeadlineExceeded (abandoned, never counted)."""
        with self._lock:
            if self._closed:
                return False
            state = self.state
        chunk = self._pending
        retry = chunk is not None
        if chunk is None:
            rows, end = self.spool.read_chunk(state.offset, self.max_chunk_bytes)
            if not rows:
                return False
            body = gzip_chunk(self.spool.header_bytes, rows)
            chunk = Chunk(state.seq + 1, state.offset, end, len(rows), rows.count(b"\n"), body)
            self._pending = chunk
        log.debug("chunk_sending", seq=chunk.seq, raw_bytes=chunk.raw_bytes,
                  gz_bytes=len(chunk.body), retry=retry)  # fmt: skip
        try:
            uri = self._call(
                lambda: self.destination.put_chunk(
                    state.chunk_name(chunk.seq), chunk.body, deadline
                ),
                f"upload of chunk {chunk.seq}",
                deadline,
            )
        except DeliveryError as exc:
            return self._failed_chunk(chunk, exc)
        with self._lock:
            if self._closed:
                return False
            moved = self.state.after_upload(uri, chunk.end)
            self.store.save(moved)  # disk first: the cursor in memory never runs ahead
            self.state = moved
        self.spool.acknowledge(moved.offset)  # after the save: a crash never loses rows
        self._pending = None
        self.telemetry.chunks_uploaded += 1
        self.telemetry.last_upload_wall = self._wall_clock()
        log.info("chunk_uploaded", seq=chunk.seq, raw_bytes=chunk.raw_bytes,
                 gz_bytes=len(chunk.body), uri=uri, attempts=chunk.attempts + 1)  # fmt: skip
        return True

    def _failed_chunk(self, chunk: Chunk, exc: DeliveryError) -> bool:
        """Count the failed attempt; a chunk refused for good `max_chunk_refusals` times in a
        row is set aside (True: the cursor moved past it), else the error goes on."""
        permanent = exc.kind is ErrorKind.PERMANENT
        chunk = dataclasses.replace(
            chunk, attempts=chunk.attempts + 1, refusals=chunk.refusals + 1 if permanent else 0
        )
        self._pending = chunk
        # Never while an abandoned attempt may still land: it would store these rows under the
        # name the next chunk takes.
        if chunk.refusals < self.max_chunk_refusals or self.in_flight:
            raise exc
        self._refuse(chunk, exc)
        return True

    def _refuse(self, chunk: Chunk, exc: DeliveryError) -> None:
        """Keep the chunk in `<spool>/refused/` and move the cursor past its rows; the next
        chunk takes its sequence number, so the delivered chunks stay 1..seq."""
        directory = self.spool.directory / REFUSED_DIR
        directory.mkdir(exist_ok=True)
        kept = directory / f"offset-{chunk.start:015d}-{chunk.end:015d}.csv.gz"
        replace_file(kept, chunk.body)
        with self._lock:
            if self._closed:
                return
            moved = self.state.after_refusal(chunk.end, chunk.rows)
            self.store.save(moved)
            self.state = moved
        self.spool.acknowledge(moved.offset)
        self._pending = None
        self.telemetry.chunks_refused += 1
        log.error("chunk_refused", seq=chunk.seq, attempts=chunk.attempts, rows=chunk.rows,
                  kept=str(kept), error=str(exc),
                  policy=f"refused for good {chunk.refusals} times in a row")  # fmt: skip

    def _call(self, call: Callable[[], _T], what: str, deadline: float) -> _T:
        running: Call[_T] = Call(call, what=what, on_done=self._changed.set)
        self._calls = [*(c for c in self._calls if c.running), running]
        while running.running:
            left = min(deadline, self._cap) - self._monotonic()
            if left <= 0:
                raise DeadlineExceeded(f"{what}: still running at the deadline, abandoned")
            self._changed.wait(left)
            self._changed.clear()
        return running.result()

    def close(self) -> None:
        """From now on nothing moves the cursor: an abandoned upload that lands is not counted."""
        with self._lock:
            self._closed = True

    def count_loss(self, loss: Loss) -> None:
        """Add what keeping the spool in its cap cost to the run's counters (saved, so a
        restart keeps them; in memory only when the disk refuses the save)."""
        with self._lock:
            self.state = self.state.after_loss(loss)
            try:
                self.store.save(self.state)
            except OSError as exc:
                if not self._loss_unsaved:  # said once until a save succeeds
                    log.error("state_not_saved", path=str(self.store.path), error=exc.strerror,
                              consequence="saved with the next upload")  # fmt: skip
                self._loss_unsaved = True
            else:
                self._loss_unsaved = False

    def finish(self) -> None:
        """Mark the run finished in the saved state; when the disk refuses it, log it: the next
        start then finds the run unfinished and closes it again, losing nothing."""
        with self._lock:
            finished = dataclasses.replace(self.state, finished=True)
            try:
                self.store.save(finished)
            except OSError as exc:
                log.error("state_not_saved", path=str(self.store.path), error=exc.strerror,
                          consequence="the next start closes this run again")  # fmt: skip
                return
            self.state = finished


class UploadWorker(threading.Thread):
    """Wakes every `upload_interval` (early once `threshold_bytes` are pending), opens the
    destination, drains; after a failure waits a backoff step with jitter, one attempt per
    step, and logs one line per change of state, not one per attempt. `stop(until)` ends it
    with a last drain (or the inline decision) before `until`."""

    def __init__(
        self,
        uploader: Uploader,
        *,
        upload_interval: float,
        threshold_bytes: int,
        max_backoff: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(name="upload-worker", daemon=True)
        self.uploader = uploader
        self.upload_interval = upload_interval
        self.threshold_bytes = threshold_bytes
        # A failed step waits at least an upload interval, doubling from one interval (at most
        # CALL_BUDGET) up to max_backoff.
        self._retry = Backoff(
            base=min(CALL_BUDGET, upload_interval),
            ceiling=max_backoff,
            floor=upload_interval,
            rng=rng or random.Random(),
        )
        self.inline = False  # set by the last drain: the rows go with the close
        self._monotonic = monotonic
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._until = math.inf
        self._attempts = 0  # failed steps in a row
        self._not_before = 0.0  # monotonic: the peer asked to wait until then
        self._failing: ErrorKind | None = None
        self._next_attempt = 0.0  # monotonic

    def nudge(self) -> None:
        """After each append: wake early when enough bytes are pending, unless backing off
        (pending bytes must not cut a backoff short: during an outage every sample would)."""
        if self._attempts == 0 and self.uploader.pending_bytes >= self.threshold_bytes:
            self._wake.set()

    def stop(self, until: float) -> None:
        """End with a last drain before `until` (monotonic); calls in flight are cut there."""
        self._until = until
        self.uploader.cap(until)
        self._stopping.set()
        self._wake.set()

    def next_attempt_in(self) -> float:
        """Seconds until the next upload (or retry) is due."""
        return max(0.0, self._next_attempt - self._monotonic())

    def done_before(self, deadline: float) -> bool:
        """Wait for the last drain until `deadline` (monotonic); True when it ended."""
        self.join(max(0.0, deadline - self._monotonic()))
        return not self.is_alive()

    def run(self) -> None:
        self._serve()
        self._last_drain()

    def _serve(self) -> None:
        next_drain = self._monotonic() + self.upload_interval
        delay = 0.0  # open at once; the first upload waits for its interval
        while True:
            woken = self._wake.wait(delay)
            self._wake.clear()
            if self._stopping.is_set():
                return
            started = self._monotonic()
            drain_due = woken or started >= next_drain
            budget = started + max(self.upload_interval, CALL_BUDGET)
            ok = self._step(self._drain_cycle if drain_due else self._open_cycle, budget)
            now = self._monotonic()
            if not ok:
                next_drain = now + self._backoff()
            elif drain_due:
                next_drain = now + self.upload_interval
            delay = max(0.0, next_drain - now)
            self._next_attempt = next_drain

    def _open_cycle(self, deadline: float) -> None:
        self.uploader.open(deadline)

    def _drain_cycle(self, deadline: float) -> None:
        self.uploader.open(deadline)
        self.uploader.spool.sync()
        self._drain(deadline)

    def _drain(self, deadline: float) -> None:
        """Deliver the rows spooled so far; rows appended meanwhile wait for the next cycle,
        so a drain never ends with a chunk of one or two rows."""
        uploader = self.uploader
        end = uploader.spool.end
        renewed = False
        while uploader.state.offset < end and self._monotonic() < deadline:
            try:
                if not uploader.upload_next(deadline):
                    return
            except DeliveryError as exc:
                if exc.kind is not ErrorKind.CREDENTIALS or renewed:
                    raise
                renewed = True  # the destination renews them on the next attempt
                log.warning("credentials_rejected", error=str(exc))

    def _last_drain(self) -> None:
        uploader = self.uploader
        wait = self._not_before - self._monotonic()
        if not uploader.opened and wait > 0:
            # Opening now could leave a second run behind on the service.
            log.warning("open_skipped_at_stop", wait_s=round(wait, 1))
            return

        def last(deadline: float) -> None:
            uploader.open(deadline)
            # Inline only when no upload may still land: it would hold the same rows.
            small = uploader.spool.disk_bytes <= uploader.destination.inline_max_bytes
            if small and uploader.state.seq == 0 and not uploader.in_flight:
                self.inline = True
                return
            self._drain(deadline)

        # No later cycle: a failed attempt is tried again soon, until the stop's budget ends.
        self._step(
            lambda deadline: retry_until(
                lambda: last(deadline), deadline, what="last drain", monotonic=self._monotonic
            ),
            self._until,
        )

    def _step(self, step: Callable[[float], None], deadline: float) -> bool:
        """Run one step of delivery; failures are counted and logged on a change of state."""
        try:
            step(deadline)
        except (DeliveryError, DeadlineExceeded) as exc:
            self._failed(exc)
            return False
        except OSError as exc:
            # ENOSPC or EIO saving the cursor or a local chunk: nothing counted as delivered,
            # said once per episode (delivery_failing), tried again on the next step.
            self._failed(exc)
            return False
        except Exception as exc:
            # The worker must survive anything (disk full, a bug in a destination): rows stay
            # spooled and the next step tries again.
            log.exception("upload_step_failed")
            self._failed(exc)
            return False
        self._recovered()
        return True

    def _failed(self, exc: Exception) -> None:
        now = self._monotonic()
        self._attempts += 1
        retry_after = exc.retry_after if isinstance(exc, DeliveryError) else None
        self._not_before = now + retry_after if retry_after else 0.0
        telemetry = self.uploader.telemetry
        telemetry.upload_failures += 1
        if telemetry.failing_since_monotonic is None:
            telemetry.failing_since_monotonic = now
        kind = exc.kind if isinstance(exc, DeliveryError) else ErrorKind.TRANSIENT
        if kind is not self._failing:
            self._failing = kind
            serious = kind in (ErrorKind.REJECTED, ErrorKind.PERMANENT)
            report = log.error if serious else log.warning
            report("delivery_failing", kind=kind, error=str(exc), opened=self.uploader.opened,
                   retry_after_s=retry_after)  # fmt: skip

    def _recovered(self) -> None:
        telemetry = self.uploader.telemetry
        if self._failing is not None and telemetry.failing_since_monotonic is not None:
            down = self._monotonic() - telemetry.failing_since_monotonic
            log.info("delivery_recovered", failed_attempts=self._attempts, down_s=round(down, 1))
        self._failing = None
        self._attempts = 0
        self._not_before = 0.0
        telemetry.failing_since_monotonic = None

    def _backoff(self) -> float:
        return self._retry.wait(self._attempts, self._not_before - self._monotonic())
