import json
import os
from pathlib import Path

import pytest

from sentinel_sidecar.exit_code import read_exit_code
from sentinel_sidecar.measure.rows import Schema, header_line
from sentinel_sidecar.spool.segment import Segment
from sentinel_sidecar.spool.state import Loss
from sentinel_sidecar.spool.store import Spool, SpoolError, set_aside
from tests.support.agent import segments

HEADER = "a,b,c\n"


def rows(n: int, start: int = 0) -> list[str]:
    return [f"{i},{i * 2},{'x' * (i % 7)}\n" for i in range(start, start + n)]


def chunks(spool: Spool, max_bytes: int, offset: int | None = None) -> list[bytes]:
    found: list[bytes] = []
    offset = spool.data_start if offset is None else offset
    while True:
        chunk, offset = spool.read_chunk(offset, max_bytes)
        if not chunk:
            return found
        found.append(chunk)


def spooled(directory: Path, header: str = HEADER) -> str:
    """Every segment's rows, in order; each segment must start with the header."""
    texts = [path.read_text() for path in segments(directory)]
    assert all(text.startswith(header) for text in texts)
    return "".join(text[len(header) :] for text in texts)


def test_header_written_once_and_rows_appended(tmp_path: Path):
    spool = Spool(tmp_path, HEADER)
    for line in rows(3):
        spool.append(line)
    spool.close()
    [segment] = segments(tmp_path)
    assert segment.read_text() == HEADER + "".join(rows(3))


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
    segment = spool._segments[-1]
    os.write(os.open(segment.path, os.O_WRONLY | os.O_APPEND), b"4,5")
    segment.size += 3
    assert chunks(spool, 1024) == [b"1,2,3\n"]


def test_reopen_after_restart_appends(tmp_path: Path):
    first = Spool(tmp_path, HEADER)
    first.append("1,2,3\n")
    first.close()
    second = Spool(tmp_path, HEADER)
    second.append("4,5,6\n")
    second.close()
    assert spooled(tmp_path) == "1,2,3\n4,5,6\n"
    assert Spool(tmp_path, HEADER).samples == 2


def test_torn_last_row_is_dropped_on_reopen(tmp_path: Path):
    Spool(tmp_path, HEADER).close()
    [segment] = segments(tmp_path)
    segment.write_text(HEADER + "1,2,3\n4,5")
    spool = Spool(tmp_path, HEADER)
    spool.append("6,7,8\n")
    spool.close()
    assert spooled(tmp_path) == "1,2,3\n6,7,8\n"


def test_a_segment_torn_inside_its_header_starts_again(tmp_path: Path):
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    for line in rows(400):
        spool.append(line)
    spool.close()
    last = segments(tmp_path)[-1]
    last.write_text(HEADER[:3])  # the crash came while the new segment's header was written
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    spool.append("1,2,3\n")
    spool.close()
    assert last.read_text() == HEADER + "1,2,3\n"


def test_header_mismatch_moves_the_old_spool_aside(tmp_path: Path):
    Spool(tmp_path, "old,header\n").append("1,2\n")
    (tmp_path / "state.json").write_text("{}")
    Spool(tmp_path, HEADER).close()
    [aside] = tmp_path.glob("previous-*")
    assert [path.name for path in sorted(aside.iterdir())][-1] == "state.json"
    assert "".join(path.read_text() for path in segments(aside)) == "old,header\n1,2\n"
    assert spooled(tmp_path) == "" and not (tmp_path / "state.json").exists()


def test_unwritable_spool_dir_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SpoolError, match="spool_dir"):
        Spool(blocker / "spool", HEADER)


def test_exit_code_file(tmp_path: Path):
    assert read_exit_code(tmp_path) is None
    (tmp_path / "exit_code").write_text("3\n")
    assert read_exit_code(tmp_path) == 3
    (tmp_path / "exit_code").write_text("oops")
    assert read_exit_code(tmp_path) is None


def test_set_aside_twice_in_one_second_keeps_both(tmp_path: Path):
    # Two starts within the same second overwrote the earlier spool set aside.
    for run in ("first", "second"):
        spool = Spool(tmp_path, HEADER)
        spool.append(f"{run}\n")
        spool.close()
        (tmp_path / "state.json").write_text(f'"{run}"')
        set_aside(tmp_path)
    kept = sorted(spooled(aside) for aside in tmp_path.glob("previous-*"))
    assert kept == ["first\n", "second\n"]
    assert len(list(tmp_path.glob("previous-*/state.json"))) == 2


def test_a_finished_runs_delivered_segments_are_deleted_not_kept(tmp_path: Path):
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    for line in rows(1000):
        spool.append(line)
    spool.close()
    delivered = spool._segments[2].end  # three segments delivered, the rest not
    left = segments(tmp_path)[3:]
    set_aside(tmp_path, delivered, HEADER.encode())
    [aside] = tmp_path.glob("previous-*")
    assert [path.name for path in segments(aside)] == [path.name for path in left]


def test_rows_roll_into_segments_that_hold_whole_rows(tmp_path: Path):
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    for line in rows(2000):
        spool.append(line)
    files = segments(tmp_path)
    assert len(files) > 5
    assert all(path.stat().st_size <= 4096 for path in files)
    assert all(path.read_text().endswith("\n") for path in files)
    assert spooled(tmp_path) == "".join(rows(2000))
    # Chunks never span segments: each chunk's rows are inside one segment file.
    found = chunks(spool, 1 << 20)
    assert len(found) == len(files)
    assert b"".join(found).decode() == "".join(rows(2000))
    assert spool.samples == 2000


def test_delivered_segments_are_deleted_and_the_count_of_rows_kept(tmp_path: Path):
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    for line in rows(2000):
        spool.append(line)
    offset = spool.data_start
    while True:
        chunk, offset = spool.read_chunk(offset, 1500)
        if not chunk:
            break
        spool.acknowledge(offset)
    # Only the segment still appended to is left, every row in it delivered.
    assert len(segments(tmp_path)) == 1 and spool.pending(offset) == 0
    spool.append("last,1,2\n")
    assert spool.pending(offset) == len("last,1,2\n")
    spool.close()
    reopened = Spool(tmp_path, HEADER, segment_bytes=4096)
    assert reopened.samples == 2001
    assert reopened.cursor_problem(offset) is None
    assert chunks(reopened, 1 << 20, offset) == [b"last,1,2\n"]


def test_a_spool_of_an_older_version_is_resumed_not_discarded(tmp_path: Path):
    old = HEADER + "".join(rows(50))
    (tmp_path / "metrics.csv").write_text(old)
    cursor = len(HEADER + "".join(rows(20)))  # what the old state.json says was delivered
    spool = Spool(tmp_path, HEADER)
    assert not (tmp_path / "metrics.csv").exists()
    assert spool.cursor_problem(cursor) is None
    assert b"".join(chunks(spool, 1 << 20, cursor)).decode() == "".join(rows(30, start=20))
    assert spool.samples == 50


@pytest.mark.parametrize(
    ("offset", "problem"),
    [
        (0, "before the spool's first row"),
        (len(HEADER) + 3, "inside a row"),
        (10**9, "past the spool's end"),
    ],
)
def test_a_cursor_that_does_not_fit_is_named(tmp_path: Path, offset: int, problem: str):
    spool = Spool(tmp_path, HEADER)
    for line in rows(20):
        spool.append(line)
    assert problem in (spool.cursor_problem(offset) or "")


EXTENDED = header_line(Schema.EXTENDED)


def sample_rows(n: int, start: int = 0) -> list[str]:
    """Rows shaped like the agent's: 1 s apart, CPU-seconds and bytes per interval, memory."""
    out = []
    for i in range(start, start + n):
        cells = {name: "0" for name in EXTENDED.rstrip().split(",")}
        cells |= {
            "timestamp": f"{1_700_000_000 + i:.3f}",
            "process_utime": f"{0.25 + (i % 3) * 0.125:.4f}",
            "process_cpu_usage": f"{0.5 + (i % 3) * 0.25:.4f}",
            "process_memory_mib": f"{100 + (i * 37) % 500:.3f}",
            "process_disk_read_bytes": str(i * 11),
            "cgroup_memory_peak_mib": f"{200 + (i * 13) % 300:.3f}",
            "process_pid": str(1000 + i),
        }
        out.append(",".join(cells.values()) + "\n")
    return out


def column(lines: list[str], name: str) -> list[float]:
    index = EXTENDED.rstrip().split(",").index(name)
    return [float(line.split(",")[index]) for line in lines]


def test_at_its_cap_the_spool_merges_undelivered_rows_and_keeps_totals(tmp_path: Path):
    cap = 8 * 4096
    spool = Spool(tmp_path, EXTENDED, segment_bytes=4096, max_bytes=cap)
    spool.acknowledge(spool.data_start)  # nothing delivered: a long outage
    taken = sample_rows(3000)
    loss = Loss()
    for line in taken:
        loss += spool.append(line)
        assert spool.disk_bytes <= cap
    assert sum(path.stat().st_size for path in segments(tmp_path)) <= cap
    kept = spooled_lines(tmp_path)
    assert loss.merged > 0 and loss.dropped == 0 and spool.full
    assert len(kept) == spool.samples - loss.merged - loss.dropped
    for name in ("process_utime", "process_disk_read_bytes"):
        assert sum(column(kept, name)) == pytest.approx(sum(column(taken, name)), rel=1e-6)
    for name in ("process_memory_mib", "cgroup_memory_peak_mib"):
        assert max(column(kept, name)) == max(column(taken, name))
    # Time still runs forward, the last row is the last taken, the newest rows are as taken.
    stamps = column(kept, "timestamp")
    assert stamps == sorted(stamps) and kept[-1] == taken[-1]
    assert kept[-10:] == taken[-10:]


def spooled_lines(directory: Path) -> list[str]:
    return spooled(directory, EXTENDED).splitlines(keepends=True)


def test_the_segment_being_delivered_is_never_merged(tmp_path: Path):
    spool = Spool(tmp_path, EXTENDED, segment_bytes=4096, max_bytes=8 * 4096)
    for line in sample_rows(40):
        spool.append(line)
    chunk, end = spool.read_chunk(spool.data_start, 1 << 20)  # in flight, not yet acknowledged
    spool.acknowledge(spool.data_start)
    for line in sample_rows(3000, start=40):
        spool.append(line)
    again, again_end = spool.read_chunk(spool.data_start, 1 << 20)
    assert (again, again_end) == (chunk, end)


def test_when_a_merge_cannot_be_written_the_segment_is_given_up_and_counted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The disk is full: not even the smaller copy of a segment can be written.
    spool = Spool(tmp_path, EXTENDED, segment_bytes=4096, max_bytes=8 * 4096)
    spool.acknowledge(spool.data_start)

    def disk_full(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Segment, "rewrite", disk_full)
    loss = Loss()
    for line in sample_rows(1000):
        loss += spool.append(line)
        assert spool.disk_bytes <= 8 * 4096
    assert loss.dropped > 0 and loss.merged == 0
    assert len(spooled_lines(tmp_path)) == spool.samples - loss.dropped


def test_state_json_records_the_run_as_the_spool_goes(tmp_path: Path):
    # The counts the runner needs after a restart come from names and state, not from rows.
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    for line in rows(1500):
        spool.append(line)
    spool.close()
    names = [path.name for path in segments(tmp_path)]
    assert names == sorted(names)
    assert json.dumps(names)  # plain names, no state inside


def test_only_the_segment_appended_to_holds_a_file_descriptor(tmp_path: Path):
    # A spool at its cap has a hundred segments; a pod's file limit may be 1024.
    before = len(os.listdir("/proc/self/fd"))
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    for line in rows(5000):
        spool.append(line)
    assert len(segments(tmp_path)) > 10
    assert len(os.listdir("/proc/self/fd")) == before + 1
    spool.close()
    assert len(os.listdir("/proc/self/fd")) == before


def test_a_segment_deleted_behind_the_agents_back_is_skipped_and_counted(tmp_path: Path):
    spool = Spool(tmp_path, HEADER, segment_bytes=4096)
    for line in rows(1000):
        spool.append(line)
    lost = segments(tmp_path)[1]
    lost_rows = lost.read_text()[len(HEADER) :]
    lost.unlink()
    delivered = b"".join(chunks(spool, 1 << 20)).decode()
    assert delivered == "".join(rows(1000)).replace(lost_rows, "")
    assert spool.append("x,y,z\n") == Loss(dropped=lost_rows.count("\n"))


def test_a_merge_reads_at_most_about_one_segment(tmp_path: Path):
    # A merge runs inside an append: its cost must not grow with the cap.
    spool = Spool(tmp_path, EXTENDED, segment_bytes=8192, max_bytes=64 * 8192)
    spool.acknowledge(spool.data_start)
    longest = max(len(line) for line in sample_rows(20_000))
    for line in sample_rows(20_000):
        spool.append(line)
    assert all(path.stat().st_size <= 8192 + longest for path in segments(tmp_path))
