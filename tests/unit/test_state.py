import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel_sidecar.spool.state import Loss, State, StateError, StateStore

HEADER = "a,b,c\n"


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
from sentinel_sidecar.spool.state import State, StateStore
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


def test_loss_counters_survive_a_restart(tmp_path: Path):
    store = StateStore(tmp_path)
    merged = state(2).after_loss(Loss(merged=40, dropped=3))
    store.save(merged.after_loss(Loss(merged=-1, dropped=2)))
    loaded = store.load()
    assert loaded is not None and (loaded.rows_merged, loaded.rows_dropped) == (39, 5)
