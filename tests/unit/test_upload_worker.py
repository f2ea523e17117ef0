"""The upload worker's decisions, one at a time on the calling thread: the refused-chunk
policy, attempts per chunk, the inline decision and the last drain's retries, the backoff's
schedule. A real spool and a local destination with a script of failures; milliseconds."""

import time
from pathlib import Path

import pytest

from sentinel_sidecar.delivery.local import LocalDestination
from sentinel_sidecar.delivery.retry import DeliveryError, ErrorKind
from sentinel_sidecar.delivery.upload import REFUSED_DIR, Uploader, UploadWorker
from sentinel_sidecar.measure.rows import Schema, header_line
from sentinel_sidecar.spool.state import State, StateStore
from sentinel_sidecar.spool.store import Spool
from sentinel_sidecar.telemetry import Telemetry
from tests.support.agent import chunk_rows, dir_chunks
from tests.support.clocks import Edges

HEADER = header_line(Schema.SENTINEL)


class Scripted(LocalDestination):
    """A local destination that fails its next puts (or closes) as scripted."""

    def __init__(self, directory: Path, inline_max_bytes: int = 0) -> None:
        super().__init__(directory, new_run=False)
        self.inline_max_bytes = inline_max_bytes
        self.failures: list[DeliveryError] = []
        self.puts: list[str] = []

    def put_chunk(self, name: str, body: bytes, deadline: float) -> str:
        self.puts.append(name)
        if self.failures:
            raise self.failures.pop(0)
        return super().put_chunk(name, body, deadline)


def refused() -> DeliveryError:
    return DeliveryError("HTTP 413: EntityTooLarge", ErrorKind.PERMANENT)


def passing() -> DeliveryError:
    return DeliveryError("HTTP 503", ErrorKind.TRANSIENT, retry_after=7.0)


@pytest.fixture
def parts(tmp_path: Path):
    spool = Spool(tmp_path / "spool", HEADER)
    destination = Scripted(tmp_path / "output")
    store = StateStore(spool.directory)
    state = State(None, None, 0, spool.data_start, HEADER)
    uploader = Uploader(spool, store, state, destination, max_chunk_bytes=1 << 20,
                        telemetry=Telemetry(), max_chunk_refusals=3)  # fmt: skip
    uploader.open(soon())
    yield spool, destination, uploader
    spool.close()


def soon() -> float:
    return time.monotonic() + 10


def test_a_chunk_refused_for_good_is_set_aside_and_the_next_takes_its_name(parts):
    spool, destination, uploader = parts
    spool.append("refused 1\nrefused 2\n")
    destination.failures = [refused(), refused(), refused()]
    for _ in range(2):
        with pytest.raises(DeliveryError):
            uploader.upload_next(soon())
    assert uploader.upload_next(soon())  # the third refusal sets it aside: the cursor moves
    [kept] = (spool.directory / REFUSED_DIR).iterdir()
    assert chunk_rows([kept.read_bytes()]) == ["refused 1\n", "refused 2\n"]
    assert uploader.state.seq == 0 and uploader.state.rows_refused == 2
    assert uploader.telemetry.chunks_refused == 1
    assert StateStore(spool.directory).load() == uploader.state  # saved
    spool.append("delivered\n")
    assert uploader.upload_next(soon())
    assert destination.puts == ["000001.csv.gz"] * 4  # the delivered chunks stay 1..seq
    assert chunk_rows(dir_chunks(destination.directory)) == ["delivered\n"]
    assert uploader.state.rows(samples=3) == 1


def test_a_failure_of_another_kind_starts_the_count_of_refusals_again(parts):
    spool, destination, uploader = parts
    spool.append("row\n")
    destination.failures = [refused(), refused(), passing(), refused(), refused()]
    for _ in range(5):
        with pytest.raises(DeliveryError):
            uploader.upload_next(soon())
    assert not (spool.directory / REFUSED_DIR).exists()
    assert uploader.upload_next(soon())
    assert uploader.telemetry.chunks_refused == 0
    assert chunk_rows(dir_chunks(destination.directory)) == ["row\n"]


def test_attempts_are_counted_per_chunk(parts):
    spool, destination, uploader = parts
    spool.append("row\n")
    destination.failures = [passing(), passing()]
    for attempts in (1, 2):
        with pytest.raises(DeliveryError):
            uploader.upload_next(soon())
        assert uploader._pending is not None and uploader._pending.attempts == attempts
    assert uploader.upload_next(soon())
    assert uploader._pending is None


def worker_for(uploader: Uploader, clock: list[float]) -> UploadWorker:
    return UploadWorker(uploader, upload_interval=1.0, threshold_bytes=10, max_backoff=300.0,
                        monotonic=lambda: clock[0], rng=Edges(True))  # fmt: skip


def test_a_small_run_that_uploaded_nothing_goes_inline_with_the_close(parts):
    spool, destination, uploader = parts
    destination.inline_max_bytes = 1 << 20
    spool.append("row\n")
    worker = worker_for(uploader, [0.0])
    worker._until = time.monotonic() + 5
    worker._last_drain()
    assert worker.inline and destination.puts == []


def test_a_run_that_uploaded_a_chunk_never_goes_inline(parts):
    spool, destination, uploader = parts
    destination.inline_max_bytes = 1 << 20
    spool.append("first\n")
    assert uploader.upload_next(soon())
    spool.append("second\n")
    worker = worker_for(uploader, [0.0])
    worker._until = time.monotonic() + 5
    worker._last_drain()
    assert not worker.inline
    assert chunk_rows(dir_chunks(destination.directory)) == ["first\n", "second\n"]


def test_the_last_drain_tries_a_passing_failure_again_within_its_budget(parts):
    spool, destination, uploader = parts
    spool.append("row\n")
    destination.failures = [DeliveryError("HTTP 503"), DeliveryError("HTTP 503")]
    worker = UploadWorker(uploader, upload_interval=1.0, threshold_bytes=10)
    worker._until = time.monotonic() + 5
    worker._last_drain()
    assert destination.puts == ["000001.csv.gz"] * 3
    assert uploader.pending_bytes == 0


def test_a_failed_step_backs_off_a_retry_after_lengthens_it_and_samples_do_not_cut_it(parts):
    spool, destination, uploader = parts
    clock = [100.0]
    worker = worker_for(uploader, clock)
    spool.append("row\n" * 10)
    destination.failures = [passing()]
    assert not worker._step(worker._drain_cycle, soon())
    assert worker._backoff() == 7.0  # Retry-After beats the first step (1 s)
    worker.nudge()
    assert not worker._wake.is_set()  # pending bytes do not end a backoff
    for attempt, top in [(2, 2.0), (3, 4.0), (9, 256.0), (10, 300.0)]:
        worker._attempts, worker._not_before = attempt, 0.0
        assert worker._backoff() == top
    assert worker._step(worker._drain_cycle, soon())  # recovered: the count starts again
    assert worker._attempts == 0
    assert uploader.telemetry.failing_since_monotonic is None
