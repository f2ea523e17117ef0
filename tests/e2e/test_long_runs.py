"""A long run compressed in time, and a long outage: the spool stays within its cap, state.json
and memory stay flat, every row is delivered once or, past the cap, merged and counted."""

import contextlib
import gzip
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from tests.support import fakefs
from tests.support.agent import (
    delivered,
    log_events,
    scrape,
    segments,
    sentinel_env,
    start_agent,
    wait_for_rows,
    wait_until,
)
from tests.support.peers import free_port

UTIME, STIME = SENTINEL_COLUMNS.index("process_utime"), SENTINEL_COLUMNS.index("process_stime")


def spool_bytes(spool: Path) -> int:
    """Bytes of the spool's segment files (what spool_max_bytes caps)."""
    total = 0
    for path in segments(spool):
        with contextlib.suppress(FileNotFoundError):  # deleted since the listing: delivered
            total += path.stat().st_size
    return total


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Chunks:
    """Rows of the chunks in `out`, read as they arrive (each chunk once)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.rows: list[str] = []
        self.count = 0

    def read_new(self) -> None:
        while (path := self.out / f"{self.count + 1:06d}.csv.gz").exists():
            lines = gzip.decompress(path.read_bytes()).decode().splitlines(keepends=True)
            assert lines[0] == ",".join(SENTINEL_COLUMNS) + "\n"
            self.rows += lines[1:]
            self.count += 1


def assert_whole_and_in_order(rows: list[str]) -> None:
    """Whole rows in time order (two ticks may share a millisecond). With the count of rows
    the agent appended (`run.json`'s rows come from the spool's own count, not from what was
    delivered) this is exactly once: a chunk sent twice would add rows, a lost one miss some."""
    assert all(row.count(",") == len(SENTINEL_COLUMNS) - 1 for row in rows)
    stamps = [float(row.split(",", 1)[0]) for row in rows]
    assert all(a <= b for a, b in itertools.pairwise(stamps)), "rows out of order"


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The agent with its log in a file: a pipe nobody reads would stall it after 64 KiB."""
    with log.open("w") as stderr:
        return start_agent(args, env, stdout=subprocess.DEVNULL, stderr=stderr)


def finished(agent: subprocess.Popen[str], log: Path) -> list[dict[str, Any]]:
    agent.wait(timeout=60)
    text = log.read_text()
    assert agent.returncode == 0, text[-3000:]
    return log_events(text)


def test_a_run_compressed_in_time_stays_in_its_cap_with_flat_state_and_memory(tmp_path: Path):
    # metrics.csv only grew (9.4 MB after 10 compressed minutes) and state.json listed every
    # chunk (48 KB after 1,181): a run of weeks got the pod evicted. What is measured does not
    # matter here, how long the run is does: a /proc of files in the kernel's formats lets the
    # agent tick twice as fast as the real one.
    proc = fakefs.fake_proc(tmp_path / "proc")
    fakefs.fake_process(proc, 4242, 1, "train")
    spool, out = tmp_path / "spool", tmp_path / "out"
    cap = 256 * 1024
    agent = start(["run", "--spool-dir", str(spool), "--output-dir", str(out),
                   "--interval", "0.001", "--upload-interval", "0.02",
                   "--spool-max-bytes", str(cap), "--spool-segment-bytes", "16384",
                   "--proc-root", str(proc), "--cgroup-root", str(tmp_path / "no-cgroupfs"),
                   "--pid", "4242", "--health-port", "0", "--progress-interval", "0"],
                  tmp_path / "agent.log")  # fmt: skip
    chunks = Chunks(out)
    most_spool = most_state = 0
    warm_rss = None
    deadline = time.monotonic() + 240
    while chunks.count < 620 or len(chunks.rows) < 31_000:
        assert time.monotonic() < deadline, f"{chunks.count} chunks, {len(chunks.rows)} rows"
        assert agent.poll() is None
        most_spool = max(most_spool, spool_bytes(spool))
        if (spool / "state.json").exists():
            most_state = max(most_state, (spool / "state.json").stat().st_size)
        if warm_rss is None and chunks.count >= 100:
            warm_rss = rss_kib(agent.pid)
        chunks.read_new()
        time.sleep(0.2)
    end_rss = rss_kib(agent.pid)
    agent.send_signal(signal.SIGTERM)
    events = finished(agent, tmp_path / "agent.log")
    chunks.read_new()
    summary = json.loads((out / "run.json").read_text())
    print(f"compressed run: {len(chunks.rows)} rows, {chunks.count} chunks, spool at most "
          f"{most_spool} bytes (cap {cap}), state.json at most {most_state} bytes, RSS "
          f"{warm_rss} -> {end_rss} KiB")  # fmt: skip
    assert most_spool <= cap and spool_bytes(spool) <= cap
    assert len(segments(spool)) <= 3  # delivered segments are deleted
    assert most_state < 1024
    assert warm_rss is not None and end_rss - warm_rss < 3 * 1024
    assert_whole_and_in_order(chunks.rows)
    assert summary["rows"] == len(chunks.rows) and summary["chunks"] == chunks.count
    assert (summary["rows_merged"], summary["rows_dropped"], summary["bytes_not_uploaded"]) == (
        0, 0, 0)  # fmt: skip
    assert summary["uris"][-1].endswith(f"{chunks.count:06d}.csv.gz")
    [end] = [event for event in events if event["event"] == "run_finished"]
    assert end["delivered"] and end["rows"] == len(chunks.rows)


BURNER = """
import sys, time
from pathlib import Path
go, burned, quit_ = (Path(arg) for arg in sys.argv[1:4])
while not go.exists():
    time.sleep(0.05)
end = time.process_time() + 3.0
while time.process_time() < end:
    pass
burned.touch()
while not quit_.exists():
    time.sleep(0.05)
"""


@pytest.fixture
def burner(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A workload that burns exactly 3.0 CPU-seconds once `go` exists, then idles until `quit`."""
    marks = tmp_path / "marks"
    marks.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", BURNER, *(str(marks / name) for name in ("go", "burned", "quit"))]
    )
    yield process, marks
    process.kill()
    process.wait()


def readyz(port: int) -> str:
    try:
        answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
    except requests.ConnectionError:
        return "down"
    return f"{answer.status_code} {answer.text.strip()}"


def test_a_long_outage_fills_the_cap_and_the_rows_are_merged_counted_and_loud(
    tmp_path: Path, burner: tuple[subprocess.Popen[bytes], Path]
):
    # Fluent Bit and Vector drop rows at their cap with little said; here the undelivered rows
    # are merged into coarser ones: CPU-seconds add up, so the run's total stays exact.
    workload, marks = burner
    spool, out = tmp_path / "spool", tmp_path / "out"
    out.write_text("a file where the output directory should be: every chunk fails")
    cap, port = 64 * 1024, free_port()
    agent = start(["run", "--spool-dir", str(spool), "--output-dir", str(out),
                   "--interval", "0.005", "--upload-interval", "0.2",
                   "--spool-max-bytes", str(cap), "--spool-segment-bytes", "8192",
                   "--pid", str(workload.pid), "--health-port", str(port),
                   "--progress-interval", "0", "--shutdown-timeout", "10"],
                  tmp_path / "agent.log")  # fmt: skip
    wait_for_rows(spool, 5)
    (marks / "go").touch()
    most_spool = 0

    def full_and_burned() -> bool:
        nonlocal most_spool
        most_spool = max(most_spool, spool_bytes(spool))
        return (marks / "burned").exists() and readyz(port) == "503 not ready: spool_full"

    wait_until(full_and_burned, 30, "the spool full and the CPU burned")
    series = scrape(port)
    assert series["sentinel_sidecar_rows_merged_total"] > 0
    assert series["sentinel_sidecar_rows_dropped_total"] == 0
    out.unlink()  # the outage ends
    wait_until(lambda: readyz(port) == "200 ready", 30, "delivery caught up")
    (marks / "quit").touch()  # the workload ends, and with it the run
    events = finished(agent, tmp_path / "agent.log")
    chunks = Chunks(out)
    chunks.read_new()
    summary = json.loads((out / "run.json").read_text())
    cpu = sum(float(row.split(",")[UTIME]) + float(row.split(",")[STIME]) for row in chunks.rows)
    print(f"outage: {summary['rows']} rows delivered, {summary['rows_merged']} merged, "
          f"{summary['rows_dropped']} dropped, spool at most {most_spool} bytes (cap {cap}), "
          f"workload CPU {cpu:.3f} s of 3.0 burned")  # fmt: skip
    assert most_spool <= cap
    assert summary["rows_merged"] > 0 and summary["rows_dropped"] == 0
    assert summary["rows"] == len(chunks.rows) and summary["bytes_not_uploaded"] == 0
    assert_whole_and_in_order(chunks.rows)
    assert 2.97 <= cpu <= 3.15  # merged, not lost: the 3.0 CPU-seconds are all there
    kinds = [event["event"] for event in events]
    assert kinds.count("spool_full") == 1 and "spool_room_again" in kinds
    [end] = [event for event in events if event["event"] == "run_finished"]
    assert end["rows_merged"] == summary["rows_merged"] and end["rows_dropped"] == 0


def test_an_s3_outage_that_fills_the_cap_reaches_the_strict_api_merged_and_whole(
    tmp_path: Path, moto, proxy, sentinel, burner: tuple[subprocess.Popen[bytes], Path]
):
    # The same policy behind the real protocol: S3 drops every connection for as long as the
    # spool takes to fill its cap, then the merged rows go to S3 and the run is finished on the
    # strict API, which ingests every object.
    workload, marks = burner
    spool, port = tmp_path / "spool", free_port()
    agent = start(["run", "--spool-dir", str(spool), "--interval", "0.005",
                   "--upload-interval", "0.2", "--spool-max-bytes", str(64 * 1024),
                   "--spool-segment-bytes", "8192", "--pid", str(workload.pid),
                   "--health-port", str(port), "--progress-interval", "0",
                   "--shutdown-timeout", "10"],
                  tmp_path / "agent.log", sentinel_env(sentinel, proxy))  # fmt: skip
    wait_until(lambda: len(moto.objects(sentinel.bucket)) >= 1, 20, "the first upload")
    proxy.down = True
    (marks / "go").touch()
    wait_until(
        lambda: (marks / "burned").exists() and readyz(port) == "503 not ready: spool_full",
        30,
        "the spool full and the CPU burned",
    )
    proxy.down = False
    wait_until(lambda: readyz(port) == "200 ready", 30, "delivery caught up")
    (marks / "quit").touch()
    events = finished(agent, tmp_path / "agent.log")
    uris, rows = delivered(moto, sentinel)
    [run] = sentinel.runs.values()
    [finish] = run.finishes
    assert finish["data_uris"] == uris
    assert_whole_and_in_order(rows)
    cpu = sum(float(row.split(",")[UTIME]) + float(row.split(",")[STIME]) for row in rows)
    [end] = [event for event in events if event["event"] == "run_finished"]
    print(f"S3 outage: {len(rows)} rows delivered, {end['rows_merged']} merged, "
          f"{end['rows_dropped']} dropped, workload CPU {cpu:.3f} s of 3.0 burned")  # fmt: skip
    assert end["delivered"] and end["rows"] == len(rows)
    assert end["rows_merged"] > 0 and end["rows_dropped"] == 0
    assert 2.97 <= cpu <= 3.15
