"""Lifecycle: open the spool, sample on a fixed schedule, upload in the background, finish."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog

from app.cgroup import CgroupReader
from app.config import Settings
from app.procfs import ProcReader, clock_ticks
from app.sampler import Collector, Reading, Ticker, header_line, make_row
from app.sinks import DirSink, Sink, SinkError
from app.spool import Spool, State, StateStore, read_exit_code, set_aside
from app.streaming import Uploader, UploadLoop

log = structlog.get_logger("app.runner")


@dataclass(frozen=True)
class RunOutcome:
    """What a finished run delivered."""

    summary: dict[str, Any]
    summary_uri: str | None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


class Runner:
    """One run of the agent, from start to finish; `stop` ends it (signals set it)."""

    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        *,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self._wall_clock = wall_clock
        self._monotonic = monotonic

    def run(self) -> RunOutcome:
        """Sample until stopped or until the workload is gone, then deliver everything."""
        settings = self.settings
        header = header_line(settings.schema)
        store = StateStore(settings.spool_dir)
        previous = store.load()
        if previous is not None and previous.finished:
            set_aside(settings.spool_dir)
            previous = None
        spool = Spool(settings.spool_dir, header)
        sink = DirSink(settings.local_output_dir)
        if previous is None or previous.header != header:
            if sink.has_output():
                log.warning("output_dir_set_aside", moved_to=sink.set_aside())
            state = State(
                run_id=None,
                upload_uri_prefix=None,
                seq=0,
                offset=spool.data_start,
                uploaded_uris=(),
                header=header,
                started_at=self._wall_clock(),
            )
            store.save(state)
            log.info("run_started", spool=str(spool.path), output=str(sink.directory))
        else:
            state = previous
            log.info("run_resumed", seq=state.seq, offset=state.offset)
        uploader = Uploader(
            spool,
            store,
            state,
            sink,
            max_chunk_bytes=settings.max_chunk_bytes,
            monotonic=self._monotonic,
        )
        loop = UploadLoop(
            uploader,
            upload_interval=settings.upload_interval,
            threshold_bytes=settings.upload_threshold_bytes,
        )
        collector = Collector(
            ProcReader(settings.proc_root),
            CgroupReader(settings.cgroup_root, clock_ticks()),
            pid=settings.pid,
            cgroup=settings.cgroup,
            wall_clock=self._wall_clock,
            monotonic=self._monotonic,
        )
        loop.start()
        try:
            self._sample(collector, spool, loop)
        finally:
            outcome = self._finish(spool, uploader, loop, sink)
        return outcome

    def _sample(self, collector: Collector, spool: Spool, loop: UploadLoop) -> None:
        started = self._monotonic()
        previous = collector.read()
        ticker = Ticker(self.settings.interval, previous.monotonic)
        seen_workload = warned = False
        while True:
            due = ticker.next_after(self._monotonic())
            stopping = self.stop.wait(max(0.0, due - self._monotonic()))
            reading = self._take(collector, spool, previous)
            previous = reading or previous
            loop.nudge()
            if stopping:
                log.info("stop_requested")
                return
            if reading is None:
                continue
            if reading.workload.process_count > 0:
                seen_workload = True
            elif seen_workload:
                log.info("workload_exited")
                return
            elif not warned and self._monotonic() - started >= self.settings.workload_wait:
                warned = True
                log.warning(
                    "no_workload_processes",
                    waited_s=self.settings.workload_wait,
                    hint="shareProcessNamespace: true is probably missing from the pod spec",
                )

    def _take(self, collector: Collector, spool: Spool, previous: Reading) -> Reading | None:
        """One sample appended to the spool; a failing read is logged and skipped."""
        try:
            reading = collector.read()
            spool.append(",".join(make_row(previous, reading, self.settings.schema)) + "\n")
        except Exception:
            # The sampler must survive anything /proc or cgroupfs throws at it.
            log.exception("sample_failed")
            return None
        return reading

    def _finish(self, spool: Spool, uploader: Uploader, loop: UploadLoop, sink: Sink) -> RunOutcome:
        deadline = self._monotonic() + self.settings.shutdown_timeout
        loop.stop(max(0.0, deadline - self._monotonic()))
        spool.sync()
        drained = uploader.drain(deadline)
        exit_code = read_exit_code(self.settings.spool_dir)
        state = uploader.state
        summary: dict[str, Any] = {
            "run_id": state.run_id,
            "started_at": _iso(state.started_at or self._wall_clock()),
            "finished_at": _iso(self._wall_clock()),
            "schema": self.settings.schema,
            "rows": spool.count_rows(),
            "chunks": state.seq,
            "uris": list(state.uploaded_uris),
            "exit_code": exit_code,
            "run_status": "failed" if exit_code else "finished",
            "bytes_not_uploaded": uploader.pending_bytes,
        }
        summary_uri = None
        try:
            summary_uri = sink.put_summary(summary)
            uploader.finish()
        except SinkError as exc:
            log.error("run_summary_failed", error=str(exc))
        spool.close()
        log.info(
            "run_finished",
            rows=summary["rows"],
            chunks=summary["chunks"],
            drained=drained,
            exit_code=exit_code,
            agent_max_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        )
        return RunOutcome(summary, summary_uri)
