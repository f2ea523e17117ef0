"""The upload cursor at its edges, with a real spool and a local destination."""

import time
from pathlib import Path

import pytest

from sentinel_sidecar.delivery.local import LocalDestination
from sentinel_sidecar.delivery.retry import DeliveryError, ErrorKind
from sentinel_sidecar.delivery.upload import Uploader
from sentinel_sidecar.measure.rows import Schema, header_line
from sentinel_sidecar.spool.state import State, StateStore
from sentinel_sidecar.spool.store import Spool
from sentinel_sidecar.telemetry import Telemetry
from tests.support.agent import chunk_rows, dir_chunks, spool_rows

HEADER = header_line(Schema.SENTINEL)


def uploader_for(spool: Spool, store: StateStore, output: Path) -> Uploader:
    state = store.load() or State(None, None, 0, spool.data_start, HEADER)
    destination = LocalDestination(output, new_run=False)
    uploader = Uploader(
        spool, store, state, destination, max_chunk_bytes=1 << 20, telemetry=Telemetry()
    )
    uploader.open(time.monotonic() + 10)
    return uploader


def test_a_failed_state_save_never_lets_the_cursor_run_ahead(tmp_path: Path):
    # The cursor in memory moved before state.json was saved: later chunks went out past the
    # saved one and a restart sent 20 rows again.
    directory, output = tmp_path / "spool", tmp_path / "output"
    directory.mkdir()
    spool, store = Spool(directory, HEADER), StateStore(directory)
    uploader = uploader_for(spool, store, output)
    for n in range(10):
        spool.append(f"row {n}\n")
    (directory / ".state.json.tmp").mkdir()  # the next save fails (as on a full disk)
    with pytest.raises(OSError):
        uploader.upload_next(time.monotonic() + 10)
    assert (uploader.state.seq, uploader.state.offset) == (0, spool.data_start)
    (directory / ".state.json.tmp").rmdir()
    for n in range(10, 20):
        spool.append(f"row {n}\n")
    assert uploader.upload_next(time.monotonic() + 10)  # chunk 1 again, the same 10 rows
    spool.close()
    # A restart from what is on disk goes on after the saved cursor: nothing twice.
    spool = Spool(directory, HEADER)
    for n in range(20, 25):
        spool.append(f"row {n}\n")
    restarted = uploader_for(spool, store, output)
    assert restarted.state.seq == 1
    assert restarted.upload_next(time.monotonic() + 10)
    spool.close()
    assert chunk_rows(dir_chunks(output)) == spool_rows(directory)


def test_local_output_on_the_spools_volume_counts_against_its_cap(tmp_path: Path):
    # Chunks in <spool_dir>/output share the emptyDir: past their share of spool_max_bytes
    # they are refused, so the rows stay in the spool, where the cap's policy applies.
    directory = tmp_path / "spool"
    output = directory / "output"
    destination = LocalDestination(output, new_run=False, budget=64 * 1024)
    spool = Spool(directory, HEADER, segment_bytes=4096, max_bytes=256 * 1024,
                  reserved=lambda: destination.kept_bytes)  # fmt: skip
    state = State(None, None, 0, spool.data_start, HEADER)
    uploader = Uploader(spool, StateStore(directory), state, destination,
                        max_chunk_bytes=1 << 20, telemetry=Telemetry())  # fmt: skip
    uploader.open(time.monotonic() + 10)
    refused = None
    for n in range(20_000):
        spool.append(f"{n},{n * 7919 % 104729:08d},{'x' * (n % 50)}\n")  # gzips poorly
        try:
            uploader.upload_next(time.monotonic() + 10)
        except DeliveryError as exc:
            refused = exc
            break
    assert refused is not None and refused.kind is ErrorKind.REJECTED
    assert "spool_max_bytes" in str(refused)
    on_disk = sum(path.stat().st_size for path in output.iterdir())
    assert destination.kept_bytes == on_disk <= 64 * 1024
    spool.close()
