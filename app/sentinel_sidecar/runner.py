"""Lifecycle: open the spool, sample on a fixed schedule, upload in the background, finish."""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import structlog

from sentinel_sidecar import assemble
from sentinel_sidecar.config import DEFAULTS, ConfigError, Settings
from sentinel_sidecar.deadline import DeadlineExceeded, call_before
from sentinel_sidecar.delivery import registry
from sentinel_sidecar.delivery.destination import Destination, DestinationStatus, RunSummary
from sentinel_sidecar.delivery.retry import DeliveryError, retry_until
from sentinel_sidecar.delivery.upload import Uploader, UploadWorker
from sentinel_sidecar.exit_code import Ending, workload_ending
from sentinel_sidecar.health import HealthServer
from sentinel_sidecar.identity.record import Identity
from sentinel_sidecar.log import RunContext
from sentinel_sidecar.measure.collect import Collector
from sentinel_sidecar.measure.reading import Reading
from sentinel_sidecar.measure.rows import Schema, header_line, make_row
from sentinel_sidecar.measure.values import ReadErrors
from sentinel_sidecar.readiness import Probe
from sentinel_sidecar.schedule import Ticker, WorkloadWatch
from sentinel_sidecar.signals import StopFlag
from sentinel_sidecar.spool.state import State, StateStore
from sentinel_sidecar.spool.store import (
    Spool,
    SpoolError,
    SpoolWriteError,
    set_aside,
)
from sentinel_sidecar.telemetry import SPOOL_UNWRITABLE, Telemetry

if TYPE_CHECKING:
    from sentinel_sidecar.launch import Command  # subprocess and shutil: only for `run -- CMD`

log = structlog.get_logger(__name__)
_T = TypeVar("_T")
SPOOL_RETRY_LOG_SECONDS = 60.0  # while the spool cannot be used, one line this often
SPOOL_HINT = "spool_dir (--spool-dir, TRACKER_SPOOL_DIR) must be a writable directory (emptyDir)"


@dataclass(frozen=True, eq=False)
class RunOutcome:
    """What a finished run delivered, and where its summary went (None: the run stays open).
    No summary when the agent was stopped before its spool could be opened."""

    summary: RunSummary | None
    summary_uri: str | None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


def _denied(exc: BaseException) -> bool:
    cause = exc.__cause__ if isinstance(exc, SpoolError) else exc
    return isinstance(cause, PermissionError)


def _rounded(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


class Runner:
    """One run of the agent, from start to finish; `stop` ends it (signals set it)."""

    def __init__(
        self,
        settings: Settings,
        stop: StopFlag,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        context: RunContext | None = None,
        command: Command | None = None,
    ) -> None:
        self.settings = settings
        self._command = command
        self.stop = stop
        self.telemetry = Telemetry()
        self._uploader: Uploader | None = None  # once the spool is open
        self._identity_known: Callable[[], Identity | None] = lambda: None  # for /metrics
        self._destination: Destination | None = None
        self._read_errors = ReadErrors()
        self._context = context or RunContext()
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        # Sentinel validates exactly the 32 columns; the extended ones go only to local and
        # direct-S3 destinations.
        extended = registry.chosen(settings).extended_schema
        self._schema = settings.schema if extended else Schema.SENTINEL

    def run(self) -> RunOutcome:
        """Sample until stopped or until the workload is gone, then deliver everything."""
        health = self._health()  # first: /readyz says why while the spool cannot be opened
        try:
            return self._run()
        finally:
            if health is not None:
                health.stop()

    def _run(self) -> RunOutcome:
        settings = self.settings
        sources = assemble.sources(self._read_errors)
        self._identity = assemble.identity_probe(settings, sources)  # in the background
        self._identity_known = self._identity.known
        collector = assemble.collector(
            settings, self._read_errors, sources, wall_clock=self._wall_clock,
            monotonic=self._monotonic,
        )  # fmt: skip
        watch = WorkloadWatch(settings, self._monotonic())
        try:
            return self._record(collector, watch)
        finally:
            collector.close()

    def _record(self, collector: Collector, watch: WorkloadWatch) -> RunOutcome:
        settings = self.settings
        header = header_line(self._schema)
        store = StateStore(settings.spool_dir)
        opened = self._open_spool(store, header, collector, watch)
        if opened is None:
            return RunOutcome(None, None)
        spool, previous = opened
        if previous is not None and previous.header == header:
            problem = spool.cursor_problem(previous.offset)
            if problem is not None:
                store.keep_aside(problem)  # a cursor that does not fit would lose or repeat rows
                previous = None
        resumed = previous is not None and previous.header == header
        state = previous if resumed and previous is not None else self._new_state(spool, header)
        spool.acknowledge(state.offset)  # deletes what a crash left delivered but not deleted
        destination = assemble.destination(
            settings,
            new_run=not resumed,
            telemetry=self.telemetry,
            context=self._context,
            identity=self._identity,
        )
        self._destination = destination
        try:
            store.save(state)
        except OSError as exc:
            # A full disk at start is no reason to stop: the first upload saves it again.
            log.error("state_not_saved", path=str(store.path), error=exc.strerror)
        if state.run_id:
            self._context.bind(run_id=state.run_id)
        if resumed:
            log.info("run_resumed", seq=state.seq, offset=state.offset, mode=settings.mode)
        else:
            log.info("run_started", spool=str(spool.directory), mode=settings.mode)
        if self._schema != settings.schema:
            log.warning("schema_not_sent", schema=settings.schema, mode=settings.mode,
                        reason="Sentinel takes the 32-column schema only")  # fmt: skip
        worker = assemble.upload(
            settings,
            spool,
            store,
            state,
            destination,
            telemetry=self.telemetry,
            context=self._context,
            wall_clock=self._wall_clock,
            monotonic=self._monotonic,
        )
        uploader = self._uploader = worker.uploader
        worker.start()
        try:
            self._sample(collector, spool, worker, watch)
        finally:
            outcome = self._finish(spool, uploader, worker, destination)
        return outcome

    def _open_spool(
        self, store: StateStore, header: str, collector: Collector, watch: WorkloadWatch
    ) -> tuple[Spool, State | None] | None:
        """The spool and the state to resume (a finished run is set aside first), tried again
        every interval while the directory cannot be used: a sidecar that exits would be
        restarted into the same fault. The workload is watched meanwhile, so its exit (or its
        absence past workload_wait) still ends the run. None when the run ended first."""
        failed_since: float | None = None
        attempts = 0
        said_at = 0.0
        while True:
            try:
                previous = store.load()
                if previous is not None and previous.finished:
                    set_aside(self.settings.spool_dir, previous.offset, previous.header.encode())
                    previous = None
                spool = Spool(
                    self.settings.spool_dir,
                    header,
                    segment_bytes=self.settings.spool_segment_bytes,
                    max_bytes=self.settings.spool_max_bytes,
                    reserved=lambda: self._destination.kept_bytes if self._destination else 0,
                )
            except (SpoolError, OSError) as exc:
                if _denied(exc) and (
                    not self.settings.pod.in_pod or self.settings.spool_dir == DEFAULTS["spool_dir"]
                ):
                    # Outside a pod there is no emptyDir to wait for: say what to change.
                    raise ConfigError(f"{exc}; {SPOOL_HINT}") from exc
                now = self._monotonic()
                attempts += 1
                if failed_since is None:
                    failed_since = said_at = now
                    log.error("spool_unusable", error=str(exc), hint=SPOOL_HINT)
                elif now - said_at >= SPOOL_RETRY_LOG_SECONDS:
                    said_at = now
                    log.error("spool_still_unusable", error=str(exc), attempts=attempts,
                              waited_s=round(now - failed_since), hint=SPOOL_HINT)  # fmt: skip
                self.telemetry.sample_failure = SPOOL_UNWRITABLE
                if self.stop.wait(self.settings.interval):
                    log.info("stop_requested", signal=self.stop.reason)
                    self._unrecorded(attempts)
                    return None
                if self._workload_ended(collector, watch):
                    self._unrecorded(attempts)
                    return None
                continue
            if failed_since is not None:
                log.info("spool_usable", path=str(spool.directory), attempts=attempts)
            self.telemetry.sample_failure = None
            return spool, previous

    def _workload_ended(self, collector: Collector, watch: WorkloadWatch) -> bool:
        """One look at the workload while nothing can be recorded; True when the run is over."""
        if self._command is not None:
            self._command.release()  # nothing can be recorded: never hold the workload back
            if self._command.exited():
                self._command.reap()
        try:
            reading = collector.read()
        except Exception:
            return False  # counted and logged by the sample loop, once it runs
        return watch.ended(reading.workload.process_count, self._monotonic())

    def _unrecorded(self, attempts: int) -> None:
        log.error("run_not_recorded", attempts=attempts, spool=str(self.settings.spool_dir),
                  reason="the spool directory could not be used", hint=SPOOL_HINT)  # fmt: skip

    def _new_state(self, spool: Spool, header: str) -> State:
        return State(
            run_id=None,
            upload_uri_prefix=None,
            seq=0,
            offset=spool.data_start,
            sample_base=spool.first_sample,
            header=header,
            started_at=self._wall_clock(),
        )

    def _health(self) -> HealthServer | None:
        if self.settings.health_port == 0:
            return None
        probe = Probe(
            telemetry=self.telemetry,
            interval=self.settings.interval,
            upload_interval=self.settings.upload_interval,
            pending_bytes=lambda: self._uploader.pending_bytes if self._uploader else 0,
            identity=lambda: self._identity_known(),
            destination=lambda: (
                self._uploader.status() if self._uploader else DestinationStatus(ready=False)
            ),
            monotonic=self._monotonic,
        )
        try:
            server = HealthServer(self.settings.health_port, probe)
        except OSError as exc:
            # A taken port must not cost the run its data: log and go on without probes.
            log.error("health_port_unavailable", port=self.settings.health_port, error=str(exc))
            return None
        server.start()
        return server

    def _sample(
        self, collector: Collector, spool: Spool, worker: UploadWorker, watch: WorkloadWatch
    ) -> None:
        previous = self._first_reading(collector)
        if previous is None:
            log.info("stop_requested", signal=self.stop.reason)
            return
        if watch.ended(previous.workload.process_count, self._monotonic()):
            return
        if self._command is not None:
            log.info("command_started", pid=self._command.pid, argv=list(self._command.argv))
            self._command.release()  # after the first reading: counted from its start
        ticker = Ticker(self.settings.interval, previous.monotonic)
        every = self.settings.progress_interval or math.inf
        progress_at = self._monotonic() + every
        while True:
            due = ticker.next_after(self._monotonic())
            stopping = self.stop.wait(max(0.0, due - self._monotonic()))
            exited = self._command is not None and self._command.exited()
            reading = self._take(collector, spool, previous)
            previous = reading or previous
            if exited and self._command is not None:
                self._command.reap()  # after a reading of its final counters
            worker.nudge()
            if self._monotonic() >= progress_at:
                progress_at = self._monotonic() + every
                self._progress(worker)
            if stopping:
                log.info("stop_requested", signal=self.stop.reason)
                return
            if reading is not None and watch.ended(
                reading.workload.process_count, self._monotonic()
            ):
                return

    def _progress(self, worker: UploadWorker) -> None:
        uploader = worker.uploader
        log.info(
            "progress",
            rows=self.telemetry.rows_sampled,
            chunks=uploader.state.seq,
            pending_bytes=uploader.pending_bytes,
            next_upload_in_s=round(worker.next_attempt_in(), 1),
            credentials_left_s=_rounded(uploader.status().credentials_left),
            sample_failures=self.telemetry.sample_failures,
            read_errors=self.telemetry.read_errors,
        )

    def _first_reading(self, collector: Collector) -> Reading | None:
        """The reading the first row counts from, tried every interval until one succeeds;
        None when the stop came first."""
        while True:
            try:
                reading = collector.read()
            except Exception as exc:
                self._sample_failed(exc)
            else:
                self._sample_recovered()
                return reading
            if self.stop.wait(self.settings.interval):
                return None

    def _take(self, collector: Collector, spool: Spool, previous: Reading) -> Reading | None:
        """One sample appended to the spool; a failure is counted, logged once per kind, and
        the next row covers the interval from the last reading that was written."""
        try:
            reading = collector.read()
            cells = make_row(previous, reading, self._schema)
            row = ",".join(cells) + "\n"
            loss = spool.append(row)
        except Exception as exc:
            # The sampler must survive anything /proc, cgroupfs or the disk throws at it.
            self._sample_failed(exc)
            return None
        self._sample_recovered()
        log.debug("sampled", processes=reading.workload.process_count, row_bytes=len(row),
                  took_ms=round((self._monotonic() - reading.monotonic) * 1000, 2))  # fmt: skip
        self.telemetry.read_errors = self._read_errors.count
        self.telemetry.usage.add(cells)  # first: a scrape reads the count, then the totals
        self.telemetry.rows_sampled += 1
        self.telemetry.last_sample_monotonic = self._monotonic()
        self.telemetry.spool_full = spool.full
        if loss and self._uploader is not None:
            self._uploader.count_loss(loss)
            # A Prometheus counter never goes down: folds taken back because their segment was
            # given up stay counted here (state.json and run.json take them back).
            self.telemetry.rows_merged += max(0, loss.merged)
            self.telemetry.rows_dropped += loss.dropped
        return reading

    def _sample_failed(self, exc: Exception) -> None:
        self.telemetry.sample_failures += 1
        kind = SPOOL_UNWRITABLE if isinstance(exc, SpoolWriteError) else type(exc).__name__
        if kind == self.telemetry.sample_failure:
            return
        self.telemetry.sample_failure = kind
        if isinstance(exc, SpoolWriteError):
            log.error("sample_not_written", kind=kind, error=str(exc),
                      hint="sampling goes on; rows are written again once space frees")  # fmt: skip
        else:
            log.error("sample_failed", kind=kind, error=str(exc), exc_info=exc)

    def _sample_recovered(self) -> None:
        if self.telemetry.sample_failure is not None:
            log.info("sampling_recovered", after=self.telemetry.sample_failure,
                     failures=self.telemetry.sample_failures)  # fmt: skip
        self.telemetry.sample_failure = None

    def _left(self, deadline: float) -> float:
        return max(0.0, deadline - self._monotonic())

    def _finish(
        self, spool: Spool, uploader: Uploader, worker: UploadWorker, destination: Destination
    ) -> RunOutcome:
        settings = self.settings
        # One budget for everything after the stop: each network call gets the time left as
        # its total deadline (a peer that trickles its answer beats any per-read timeout), and
        # the last part of the budget is kept for the finish or run.json.
        deadline = self._monotonic() + settings.shutdown_timeout
        uploads_until = deadline - min(5.0, settings.shutdown_timeout / 3)
        spool.sync()
        worker.stop(uploads_until)
        ending = self._ending(deadline) or Ending(None)  # while the worker drains
        if not worker.done_before(min(deadline, uploads_until + 0.5)):
            log.error("upload_worker_not_done", waited_s=round(settings.shutdown_timeout, 1))
        uploader.close()
        state = uploader.state
        identity = self._identity.result(min(1.0, self._left(deadline) / 4))
        summary = RunSummary(
            run_id=state.run_id,
            started_at=_iso(state.started_at or self._wall_clock()),
            finished_at=_iso(self._wall_clock()),
            schema=self._schema,
            rows=state.rows(spool.samples),
            rows_merged=state.rows_merged,
            rows_dropped=state.rows_dropped,
            rows_refused=state.rows_refused,
            chunks=state.seq,
            uris=state.uris(),
            exit_code=ending.code,
            oom_killed=ending.oom_killed,
            bytes_not_uploaded=0 if worker.inline else uploader.pending_bytes,
            inline=worker.inline,
            identity=identity.record(),
            resources=identity.resources,
        )
        if summary.bytes_not_uploaded:
            log.error("rows_not_uploaded", bytes=summary.bytes_not_uploaded,
                      spool=str(spool.directory))  # fmt: skip
        summary_uri = self._within(
            deadline,
            lambda: retry_until(
                lambda: destination.close(summary, spool, deadline),
                deadline,
                what="close of the run",
                monotonic=self._monotonic,
            ),
            "close of the run",
        )
        if summary_uri is not None:
            uploader.finish()
        try:
            spool.close()
        except OSError as exc:  # EIO on the last fsync: the rows are as durable as they get
            log.error("spool_not_synced", path=str(spool.directory), error=exc.strerror)
        delivered = summary_uri is not None and summary.bytes_not_uploaded == 0
        (log.info if delivered else log.error)(
            "run_finished",
            delivered=delivered,  # every row delivered and the run closed
            where=summary_uri if delivered else str(spool.directory),
            rows=summary.rows,
            rows_merged=summary.rows_merged,
            rows_dropped=summary.rows_dropped,
            rows_refused=summary.rows_refused,
            chunks=summary.chunks,
            closed=summary_uri is not None,
            inline=summary.inline,
            bytes_not_uploaded=summary.bytes_not_uploaded,
            exit_code=ending.code,
            agent_max_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        )
        return RunOutcome(summary, summary_uri)

    def _ending(self, deadline: float) -> Ending | None:
        """How the workload ended (`exit_code.workload_ending`), within half the time left and
        at most 10 s."""
        until = self._monotonic() + min(10.0, self._left(deadline) / 2)
        return self._within(
            until,
            lambda: workload_ending(self.settings, self._command, until, self._monotonic),
            "exit code of the workload",
        )

    def _within(self, deadline: float, call: Callable[[], _T], what: str) -> _T | None:
        """`call()` within `deadline`; None (logged) when it fails or is still running then."""
        try:
            return call_before(deadline, call, what=what, monotonic=self._monotonic)
        except (DeliveryError, DeadlineExceeded) as exc:
            log.error("shutdown_call_failed", call=what, error=str(exc))
            return None
