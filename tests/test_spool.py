import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel_sidecar.spool import (
    Spool,
    SpoolError,
    State,
    StateError,
    StateStore,
    read_exit_code,
    set_aside,
)

HEADER = "a,b,c\n"


def rows(n: int, start: int = 0) -> list[str]:
    return [f"{i},{i * 2},{'x' * (i % 7)}\n" for i in range(start, start + n)]


def chunks(spool: Spool, max_bytes: int) -> list[bytes]:
    found, offset = [], spool.data_start
    while chunk := spool.read_chunk(offset, max_bytes):
        found.append(chunk)
        offset += len(chunk)
    return found


def test_header_written_once_and_rows_appended(tmp_path: Path):
    spool = Spool(tmp_path, HEADER)
    for line in rows(3):
        spool.append(line)
    spool.close()
    assert (tmp_path / "metrics.csv").read_text() == HEADER + "".join(rows(3))


def test_chunk_never_splits_a_row_and_honours_max_bytes(tmp_path: Path):
    spool = Spool(tmp_path, HEADER)
    for line in rows(500):
        spool.append(line)
    found = chunks(spool, 64)
    assert all(chunk.endswith(b"\n") and len(chunk) <= 64 for chunk in found)
    assert b"".join(found).decode() == "".join(rows(500))


def test_a_row_longer_than_max_bytes_comes_whole(tmp_path: Path):
    spool = Spool(tmp_path, HEADER)
    long_row = "9," + "y" * 200_000 + "\n"
    spool.append("1,2,3\n")
    spool.append(long_row)
    spool.append("4,5,6\n")
    assert chunks(spool, 10) == [b"1,2,3\n", long_row.encode(), b"4,5,6\n"]


def test_incomplete_tail_is_not_returned(tmp_path: Path):
    spool = Spool(tmp_path, HEADER)
    spool.append("1,2,3\n")
    os.write(os.open(spool.path, os.O_WRONLY | os.O_APPEND), b"4,5")
    spool.size += 3
    assert chunks(spool, 1024) == [b"1,2,3\n"]


def test_reopen_after_restart_appends(tmp_path: Path):
    first = Spool(tmp_path, HEADER)
    first.append("1,2,3\n")
    first.close()
    second = Spool(tmp_path, HEADER)
    second.append("4,5,6\n")
    second.close()
    assert (tmp_path / "metrics.csv").read_text() == HEADER + "1,2,3\n4,5,6\n"
    assert Spool(tmp_path, HEADER).count_rows() == 2


def test_torn_last_row_is_dropped_on_reopen(tmp_path: Path):
    (tmp_path / "metrics.csv").write_text(HEADER + "1,2,3\n4,5")
    spool = Spool(tmp_path, HEADER)
    spool.append("6,7,8\n")
    spool.close()
    assert (tmp_path / "metrics.csv").read_text() == HEADER + "1,2,3\n6,7,8\n"


def test_header_mismatch_moves_the_old_spool_aside(tmp_path: Path):
    (tmp_path / "metrics.csv").write_text("old,header\n1,2\n")
    (tmp_path / "state.json").write_text("{}")
    spool = Spool(tmp_path, HEADER)
    spool.close()
    asides = sorted(tmp_path.glob("metrics.*.csv"))
    assert len(asides) == 1
    assert asides[0].read_text() == "old,header\n1,2\n"
    assert (tmp_path / "metrics.csv").read_text() == HEADER
    assert list(tmp_path.glob("state.*.json"))
    assert not (tmp_path / "state.json").exists()


def test_unwritable_spool_dir_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match="spool_dir"):
        Spool(blocker / "spool", HEADER)


def state(seq: int) -> State:
    return State(
        run_id="r1",
        upload_uri_prefix="s3://b/p",
        seq=seq,
        offset=100 * seq,
        header=HEADER,
        started_at=1.5,
        chunk_base="s3://b/p" if seq else None,
    )


def test_state_round_trips(tmp_path: Path):
    store = StateStore(tmp_path)
    assert store.load() is None
    store.save(state(3))
    assert store.load() == state(3)
    assert json.loads((tmp_path / "state.json").read_text())["seq"] == 3


def test_state_survives_a_failure_between_write_and_rename(tmp_path: Path, monkeypatch):
    store = StateStore(tmp_path)
    store.save(state(1))

    def crash(*_args: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.save(state(2))
    monkeypatch.undo()
    assert store.load() == state(1)  # the old state, whole; the torn temp file is ignored


WRITER = """
import sys
from pathlib import Path
from sentinel_sidecar.spool import State, StateStore
store = StateStore(Path(sys.argv[1]))
seq = 0
print("ready", flush=True)
while True:
    seq = seq % 50 + 1  # the file's size varies from save to save
    store.save(State("r", "s3://b/p", seq, seq * 10, "h\\n", chunk_base="s3://b/" + "u" * 50 * seq))
"""


def test_state_is_never_torn_when_the_writer_is_killed(tmp_path: Path):
    for _ in range(5):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        time.sleep(0.2)
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        loaded = StateStore(tmp_path).load()
        assert loaded is not None and loaded.seq > 0
        assert loaded.offset == loaded.seq * 10


def test_exit_code_file(tmp_path: Path):
    assert read_exit_code(tmp_path) is None
    (tmp_path / "exit_code").write_text("3\n")
    assert read_exit_code(tmp_path) == 3
    (tmp_path / "exit_code").write_text("oops")
    assert read_exit_code(tmp_path) is None


def test_set_aside_twice_in_one_second_keeps_both(tmp_path: Path):
    # Two starts within the same second overwrote the earlier spool set aside.
    for run in ("first", "second"):
        (tmp_path / "metrics.csv").write_text(f"{run}\n")
        (tmp_path / "state.json").write_text(f'"{run}"')
        set_aside(tmp_path)
    kept = sorted(path.read_text() for path in tmp_path.glob("metrics.*.csv"))
    assert kept == ["first\n", "second\n"]
    assert len(list(tmp_path.glob("state.*.json"))) == 2


def test_state_stays_small_whatever_the_runs_length(tmp_path: Path):
    # state.json listed every URI: 48 KB after 1,181 chunks, rewritten after each upload.
    store = StateStore(tmp_path)
    current = state(0)
    for seq in range(1, 10_001):
        current = current.after_upload(f"s3://b/p/{seq:06d}.csv.gz", 100 * seq)
    store.save(current)
    size = (tmp_path / "state.json").stat().st_size
    print(f"state.json after 10,000 chunks: {size} bytes")
    assert size < 1024
    loaded = store.load()
    assert loaded is not None and loaded.seq == 10_000
    uris = loaded.uris()
    assert uris[0] == "s3://b/p/000001.csv.gz" and uris[-1] == "s3://b/p/010000.csv.gz"
    assert list(uris) == sorted(uris)  # names sort as text in the order of the run


def test_a_state_of_an_older_version_resumes_with_its_four_digit_names(tmp_path: Path):
    old = {"run_id": "r1", "upload_uri_prefix": "s3://b/p", "seq": 2, "offset": 200,
           "uploaded_uris": ["s3://b/p/0001.csv.gz", "s3://b/p/0002.csv.gz"],
           "header": HEADER, "finished": False, "started_at": 1.5}  # fmt: skip
    (tmp_path / "state.json").write_text(json.dumps(old))
    loaded = StateStore(tmp_path).load()
    assert loaded is not None and loaded.name_digits == 4 and loaded.chunk_base == "s3://b/p"
    moved = loaded.after_upload("s3://b/p/0003.csv.gz", 300)
    assert moved.uris() == ("s3://b/p/0001.csv.gz", "s3://b/p/0002.csv.gz", "s3://b/p/0003.csv.gz")


def test_a_chunk_confirmed_under_another_name_is_refused():
    with pytest.raises(StateError, match=r"not at \.\.\./000001\.csv\.gz"):
        state(0).after_upload("s3://b/p/0001.csv.gz", 100)
