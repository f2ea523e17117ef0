"""The upload loop: next chunk from the spool cursor, gzip, deliver, then move the cursor."""

from __future__ import annotations

import dataclasses
import gzip
import threading
import time
from collections.abc import Callable

import structlog

from app.sinks import Sink, SinkError
from app.spool import Spool, State, StateStore

log = structlog.get_logger("app.streaming")


def gzip_chunk(header: bytes, rows: bytes) -> bytes:
    """A standalone gzipped CSV: the header line, then whole rows."""
    return gzip.compress(header + rows, compresslevel=6, mtime=0)


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
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.store = store
        self.state = state
        self.sink = sink
        self.max_chunk_bytes = max_chunk_bytes
        self.failures = 0
        self._monotonic = monotonic
        self._lock = threading.Lock()

    @property
    def pending_bytes(self) -> int:
        """Spooled bytes not yet delivered."""
        return max(0, self.spool.size - self.state.offset)

    def upload_next(self) -> bool:
        """Deliver the next chunk; False when nothing whole is pending. Raises SinkError."""
        with self._lock:
            rows = self.spool.read_chunk(self.state.offset, self.max_chunk_bytes)
            if not rows:
                return False
            seq = self.state.seq + 1
            body = gzip_chunk(self.spool.header_bytes, rows)
            uri = self.sink.put_chunk(seq, body)
            self.state = self.state.after_upload(uri, self.state.offset + len(rows))
            self.store.save(self.state)
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
                if self.state.offset >= end or not self.upload_next():
                    self.failures = 0
                    return True
            except SinkError as exc:
                self.failures += 1
                log.warning("chunk_upload_failed", error=str(exc), failures=self.failures)
                return False
        return self.state.offset >= end

    def finish(self) -> None:
        """Mark the run finished in the saved state."""
        with self._lock:
            self.state = dataclasses.replace(self.state, finished=True)
            self.store.save(self.state)


class UploadLoop(threading.Thread):
    """Wakes every `upload_interval` (or early when the spool passes a threshold) and drains."""

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

    def nudge(self) -> None:
        """Called after each append: wake early when enough bytes are pending."""
        if self.uploader.pending_bytes >= self.threshold_bytes:
            self.wake.set()

    def run(self) -> None:
        delay = self.upload_interval
        while not self.stopping.is_set():
            self.wake.wait(delay)
            self.wake.clear()
            if self.stopping.is_set():
                return
            try:
                self.uploader.spool.sync()
                done = self.uploader.drain(time.monotonic() + self.upload_interval)
            except Exception:
                # The loop must survive anything (disk full, a bug in a sink): rows stay spooled.
                log.exception("upload_cycle_failed")
                done = False
            failures = self.uploader.failures
            delay = (
                self.upload_interval
                if done or not failures
                else min(self.max_backoff, self.upload_interval * 2 ** min(failures - 1, 8))
            )

    def stop(self, timeout: float) -> None:
        """Stop the loop and wait up to `timeout` seconds for a running upload to end."""
        self.stopping.set()
        self.wake.set()
        self.join(timeout)
