"""Faults a node really produces, reproduced with real mechanisms against the real CLI: each
case ends with exit 0, no partial or glued row delivered, and nothing lost or duplicated
against the spool. Figures go to stdout (`pytest -s`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from sentinel_sidecar.measure.rows import Schema, header_line
from tests.support import fakefs
from tests.support.agent import (
    chunk_rows,
    dir_chunks,
    health_answers,
    log_events,
    run_args,
    scrape,
    segments,
    sigterm,
    spool_rows,
    start_agent,
    wait_for_rows,
    wait_until,
)
from tests.support.peers import REGION, free_port

F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, Linux only


def local_args(tmp_path: Path, pid: int, *extra: str) -> list[str]:
    return run_args(tmp_path / "spool", "--interval", "0.05", "--upload-interval", "0.2",
                    "--max-chunk-bytes", "2000", "--pid", str(pid), "--shutdown-timeout", "5",
                    *extra, output=tmp_path / "out")  # fmt: skip


def delivered_exactly_once(tmp_path: Path, *, spool_deletes: bool = False) -> int:
    """Rows delivered; asserts the chunks hold exactly the spool's rows, each whole, in order
    (with `spool_deletes`, the rows left in the spool are the chunks' last ones, and the count
    is the one the spool's segment names keep)."""
    spooled = spool_rows(tmp_path / "spool")
    delivered = chunk_rows(dir_chunks(tmp_path / "out"))
    if spool_deletes:
        assert len(spooled) < len(delivered) and delivered[-len(spooled) :] == spooled
    else:
        assert delivered == spooled
    assert all(row.count(",") == 31 for row in delivered)  # whole rows, none glued
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["rows"] == len(delivered) and summary["bytes_not_uploaded"] == 0
    return len(delivered)


# --- signals ---------------------------------------------------------------------------------


def test_sigterm_while_stderr_is_stalled_never_deadlocks(tmp_path: Path, workload):
    # The handler used to log: structlog's print lock is not re-entrant, so a SIGTERM landing
    # while the main thread wrote a line hung the agent until SIGKILL (5 of 5).
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 4096)
    agent = start_agent(
        local_args(tmp_path, workload.pid), stdout=subprocess.DEVNULL, stderr=write_end
    )
    os.close(write_end)
    try:
        wait_for_rows(tmp_path / "spool", 20)  # by now stderr is full: the agent blocks on it
        agent.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        started = time.monotonic()
        os.set_blocking(read_end, False)
        while agent.poll() is None and time.monotonic() - started < 20:
            try:
                os.read(read_end, 65536)  # the reader catches up
            except BlockingIOError:
                time.sleep(0.01)
        assert agent.poll() == 0, "still alive 20 s after stderr was read again"
        print(f"stalled stderr: exit {agent.returncode}, {time.monotonic() - started:.2f} s "
              "after the reader resumed")  # fmt: skip
    finally:
        if agent.poll() is None:
            agent.kill()
        os.close(read_end)
    delivered_exactly_once(tmp_path)


@pytest.mark.parametrize("gap", [0.005, 0.02])
def test_a_second_sigterm_soon_after_the_first_is_harmless(tmp_path: Path, workload, gap: float):
    agent = start_agent(local_args(tmp_path, workload.pid))
    wait_for_rows(tmp_path / "spool", 10)
    agent.send_signal(signal.SIGTERM)
    time.sleep(gap)
    agent.send_signal(signal.SIGTERM)
    agent.send_signal(signal.SIGINT)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    rows = delivered_exactly_once(tmp_path)
    print(f"second signal after {gap * 1000:.0f} ms: exit 0, {rows} rows, lost 0, duplicated 0")


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3])
def test_sigterm_during_start_up_drains_and_exits_0(tmp_path: Path, workload, delay: float):
    agent = start_agent(local_args(tmp_path, workload.pid))
    time.sleep(delay)
    wait_until(lambda: _handlers_installed(agent.pid), 10, "stop handlers installed")
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    delivered_exactly_once(tmp_path)


def _handlers_installed(pid: int) -> bool:
    """The process catches SIGTERM (SigCgt in /proc/<pid>/status)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(
        next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16
    )
    return bool(caught & (1 << (signal.SIGTERM - 1)))


# --- the spool's disk --------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `where` for the test's life."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(path: Path) -> int:
    """Write to `path` until the disk is full; the bytes written."""
    written = 0
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                written += handle.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return written


def readyz(port: int) -> tuple[int, str]:
    answer = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    return answer.status_code, answer.text.strip()


def rows_sampled(port: int) -> int:
    """Rows the agent has written so far, from its /metrics (delivered segments are deleted)."""
    return int(scrape(port)["sentinel_sidecar_rows_sampled_total"])


def stop(agent: subprocess.Popen[str]) -> tuple[float, list[dict[str, Any]]]:
    """SIGTERM; seconds to exit and the log's events. Asserts exit 0."""
    elapsed, err = sigterm(agent, timeout=30)
    return elapsed, log_events(err)


def names(events: list[dict[str, Any]]) -> list[str]:
    return [event["event"] for event in events]


@needs_root
@pytest.mark.parametrize("segment_bytes", [None, 4096], ids=["one-segment", "rolling-segments"])
def test_a_full_disk_never_glues_rows_and_sampling_resumes(
    tmp_path: Path, workload, segment_bytes: int | None
):
    # A short write used to leave part of a row, the next row was glued on, and the 50-field
    # line was uploaded; SIGTERM then exited 1. With small segments the disk fills while new
    # segments are started and delivered ones deleted.
    small = ["--spool-segment-bytes", str(segment_bytes), "--spool-max-bytes", "65536"]
    with tmpfs(tmp_path / "disk", "1m") as disk:
        port = free_port()
        args = local_args(disk, workload.pid, "--health-port", str(port),
                          *(small if segment_bytes else []))  # fmt: skip
        agent = start_agent(args)
        wait_for_rows(disk / "spool", 20)
        filler = disk / "filler"
        fill(filler)
        # the last page of the segment still takes a few rows, then every append fails
        wait_until(lambda: readyz(port)[1] == "not ready: spool_unwritable", 10, "unwritable")
        before = rows_sampled(port)
        filler.unlink()
        wait_until(lambda: rows_sampled(port) > before + 10, 10, "rows after space freed")
        elapsed, events = stop(agent)
        assert names(events).count("sample_not_written") == 1  # once, not once per tick
        assert "sampling_recovered" in names(events)
        rows = delivered_exactly_once(disk, spool_deletes=segment_bytes is not None)
        assert not list((disk / "out").glob(".*.tmp")) and not list((disk / "spool").glob("*.tmp"))
        print(f"disk full: exit 0 in {elapsed:.2f} s, {rows} rows, lost 0, duplicated 0, "
              "glued 0")  # fmt: skip


@needs_root
def test_starting_on_a_full_disk_is_no_crash_loop(tmp_path: Path, workload):
    # A raw traceback at start used to follow (crash loop): no room for the header.
    with tmpfs(tmp_path / "disk", "1m") as disk:
        filler = disk / "filler"
        fill(filler)
        port = free_port()
        agent = start_agent(local_args(disk, workload.pid, "--health-port", str(port)))
        wait_until(lambda: health_answers(port) and readyz(port)[0] == 503, 10, "not ready")
        time.sleep(0.5)
        full = readyz(port)
        filler.unlink()
        wait_for_rows(disk / "spool", 10)
        elapsed, events = stop(agent)
        assert full == (503, "not ready: spool_unwritable")
        assert names(events).count("sample_not_written") == 1
        rows = delivered_exactly_once(disk)
    print(f"start on a full disk: exit 0 in {elapsed:.2f} s, {rows} rows once space freed")


@needs_root
def test_a_read_only_spool_at_start_is_reported_not_a_crash_loop(tmp_path: Path, workload):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        port = free_port()
        agent = start_agent(local_args(disk, workload.pid, "--health-port", str(port)))
        wait_until(lambda: health_answers(port), 10, "health endpoint")
        status = readyz(port)
        elapsed, events = stop(agent)
    assert status == (503, "not ready: spool_unwritable")
    [unusable] = [event for event in events if event["event"] == "spool_unusable"]
    assert "spool_dir" in unusable["hint"]
    print(f"read-only spool at start: exit 0 in {elapsed:.2f} s")


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_deleted_or_replaced_spool_is_recreated_with_every_row(tmp_path: Path, workload, how):
    agent = start_agent(local_args(tmp_path, workload.pid))
    spool = tmp_path / "spool"
    wait_for_rows(spool, 15)
    [active] = segments(spool)
    if how == "replaced":
        other = tmp_path / "other.csv"
        other.write_text("not,ours\n")
        other.replace(active)
    else:
        active.unlink()
    wait_until(lambda: _rows_in(active) > 20, 10, "recreated with new rows")
    elapsed, events = stop(agent)
    [recreated] = [event for event in events if event["event"] == "spool_recreated"]
    assert recreated["reason"] == how
    rows = delivered_exactly_once(tmp_path)
    if how == "replaced":
        [foreign] = spool.glob("foreign.segment-*.csv")
        assert foreign.read_text() == "not,ours\n"
    print(f"spool {how}: exit 0 in {elapsed:.2f} s, {rows} rows, lost 0, duplicated 0")


def _rows_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n") - 1
    except FileNotFoundError:
        return 0


# --- what the spool directory holds at start ---------------------------------------------------

HEADER = header_line(Schema.SENTINEL)
OLD_ROWS = "".join(f"{1_700_000_000 + i}.000," + ",".join(["0"] * 31) + "\n" for i in range(40))


def valid_state(**changes: Any) -> dict[str, Any]:
    return {"run_id": None, "upload_uri_prefix": None, "seq": 0, "offset": len(HEADER),
            "chunk_base": None, "name_digits": 6, "header": HEADER, "finished": False,
            "started_at": 1.0,
            **changes}  # fmt: skip


def start_and_stop(tmp_path: Path, pid: int) -> tuple[float, list[dict[str, Any]]]:
    agent = start_agent(local_args(tmp_path, pid))
    wait_for_rows(tmp_path / "spool", 45)
    return stop(agent)


STATES = {
    "null": "null",
    "list": "[]",
    "string": '"x"',
    "truncated": json.dumps(valid_state())[:40],
    "string-offset": json.dumps(valid_state(offset=str(len(HEADER)))),
    "offset-past-end": json.dumps(valid_state(offset=len(HEADER) + len(OLD_ROWS) + 500)),
    "offset-in-a-row": json.dumps(valid_state(offset=len(HEADER) + 10)),
    "offset-in-header": json.dumps(valid_state(offset=5)),
    "negative-seq": json.dumps(valid_state(seq=-1)),
    "seq-without-chunk-base": json.dumps(valid_state(seq=3)),
    "legacy-uris-not-by-the-rule": json.dumps(
        {**valid_state(seq=2), "uploaded_uris": ["/o/0001.csv.gz", "/o/0003.csv.gz"]}
    ),
}


@pytest.mark.parametrize("content", STATES.values(), ids=STATES.keys())
def test_a_state_json_that_cannot_be_trusted_is_kept_aside(tmp_path: Path, workload, content):
    # They crashed every start (null, list, string offset) or lost rows silently (38 for an
    # offset past the end), sent fragments or repeated rows, named objects `-001.csv.gz`.
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "metrics.csv").write_text(HEADER + OLD_ROWS)
    (spool / "state.json").write_text(content)
    elapsed, events = start_and_stop(tmp_path, workload.pid)
    [invalid] = [event for event in events if event["event"] == "state_invalid"]
    assert (spool / "state.invalid.1.json").read_text() == content
    rows = delivered_exactly_once(tmp_path)
    assert "".join(spool_rows(spool)).startswith(OLD_ROWS)  # the earlier rows go too, once
    print(f"state.json {invalid['problem']!r}: exit 0 in {elapsed:.2f} s, {rows} rows, lost 0, "
          "duplicated 0")  # fmt: skip


def test_a_new_run_on_a_spool_that_lost_its_first_segments_counts_only_its_own_rows(
    tmp_path: Path, workload
):
    # Segments before this one were delivered and deleted; its name says 100 rows came first.
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "segment-000000000123456-000000000100.csv").write_text(HEADER + OLD_ROWS)
    (spool / "state.json").write_text("null")  # not to be trusted: a new run from the first row
    start_and_stop(tmp_path, workload.pid)
    assert "".join(spool_rows(spool)).startswith(OLD_ROWS)
    delivered_exactly_once(tmp_path)  # run.json's rows: what this run delivered, not 100 more


TAILS = {
    "torn-row": b"1700000099.000,0,0,0",
    "zeros-100KiB": b"\0" * 100_000,
    "row-then-zeros": b"1700000099.000,0,0" + b"\0" * 70_000 + b"\n",
}


@pytest.mark.parametrize("tail", TAILS.values(), ids=TAILS.keys())
def test_a_torn_or_zero_filled_tail_is_dropped_never_the_header(tmp_path: Path, workload, tail):
    # A zero-filled tail longer than 64 KiB used to truncate the whole spool to 0 bytes.
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "metrics.csv").write_bytes((HEADER + OLD_ROWS).encode() + tail)
    elapsed, events = start_and_stop(tmp_path, workload.pid)
    [dropped] = [event for event in events if event["event"] == "spool_torn_tail_dropped"]
    assert dropped["bytes"] == len(tail)
    assert "".join(spool_rows(spool)).startswith(OLD_ROWS)
    rows = delivered_exactly_once(tmp_path)
    print(f"tail {len(tail)} bytes: exit 0 in {elapsed:.2f} s, {rows} rows, lost 0")


# --- secrets -----------------------------------------------------------------------------------


def test_a_token_with_a_newline_works_and_no_secret_reaches_the_log(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    # A Secret made with --from-file ends in a newline: requests refused the header and logged
    # "Invalid ... header value: 'Bearer sntl_…\n'" ten times.
    spool = tmp_path / "spool"
    env = {"SENTINEL_API_URL": sentinel.url, "SENTINEL_API_TOKEN": sentinel.token + "\n",
           "S3_ENDPOINT_URL": proxy.endpoint, "AWS_REGION": REGION}  # fmt: skip
    args = ["run", "--spool-dir", str(spool), "--interval", "0.1", "--upload-interval", "0.5",
            "--pid", str(workload.pid), "--health-port", "0", "--log-level", "debug"]  # fmt: skip
    agent = start_agent(args, env)
    wait_until(lambda: sentinel.registrations() == 1, 20, "registration")
    wait_for_rows(spool, 20)
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    assert sentinel.issued_secrets and sentinel.token not in err
    assert not [secret for secret in sentinel.issued_secrets if secret in err]


def test_a_token_echoed_back_by_the_api_is_redacted(tmp_path: Path, proxy, sentinel, workload):
    token_file = tmp_path / "token"
    token_file.write_text("sntl_wrong_but_secret\n")
    spool = tmp_path / "spool"
    env = {"SENTINEL_API_URL": sentinel.url, "SENTINEL_API_TOKEN_FILE": str(token_file),
           "S3_ENDPOINT_URL": proxy.endpoint, "AWS_REGION": REGION}  # fmt: skip
    args = ["run", "--spool-dir", str(spool), "--interval", "0.1", "--pid", str(workload.pid),
            "--health-port", "0", "--log-level", "debug"]  # fmt: skip
    agent = start_agent(args, env)
    wait_until(lambda: any(status == 401 for _p, status in sentinel.requests), 20, "a 401")
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    assert "Invalid or missing token" in err  # the echo reached the log ...
    assert "sntl_wrong_but_secret" not in err  # ... without the token


# --- wall clock --------------------------------------------------------------------------------

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
needs_faketime = pytest.mark.skipif(
    not LIBFAKETIME.exists(), reason="libfaketime is missing (apt-get install faketime)"
)


def faked(offset_file: Path) -> dict[str, str]:
    """The agent's wall clock read from `offset_file` (e.g. `+2h`) at every call; monotonic
    and boot-time clocks stay real, as on a node whose wall clock steps."""
    return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset_file),
            "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}  # fmt: skip


@needs_faketime
def test_a_local_clock_ahead_of_the_api_does_not_refresh_credentials_all_the_time(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    # Judged by the local wall clock, credentials valid for an hour looked expired an hour
    # ago: the agent refreshed them before every upload.
    offset = tmp_path / "offset"
    offset.write_text("+2h\n")
    spool = tmp_path / "spool"
    env = {"SENTINEL_API_URL": sentinel.url, "SENTINEL_API_TOKEN": sentinel.token,
           "S3_ENDPOINT_URL": proxy.endpoint, "AWS_REGION": REGION, **faked(offset)}  # fmt: skip
    args = ["run", "--spool-dir", str(spool), "--interval", "0.1", "--upload-interval", "0.5",
            "--pid", str(workload.pid), "--health-port", "0"]  # fmt: skip
    agent = start_agent(args, env)
    wait_until(lambda: len(moto.objects(sentinel.bucket)) >= 5, 30, "five uploads")
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    [run] = sentinel.runs.values()
    print(f"clock 2 h ahead: {run.refreshes} credential refreshes for "
          f"{len(run.finishes[0]['data_uris'])} uploads")  # fmt: skip
    assert run.refreshes == 0
    assert len(run.finishes) == 1


@needs_faketime
def test_a_wall_clock_step_loses_no_process_and_no_row(tmp_path: Path):
    # New processes were dropped after a step: boot time was cached once and compared with a
    # live value.
    offset = tmp_path / "offset"
    offset.write_text("+0\n")
    workload = subprocess.Popen(  # short children, all the time
        ["sh", "-c", "while :; do sh -c 'i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done'; done"]
    )
    try:
        agent = start_agent(local_args(tmp_path, workload.pid), faked(offset))
        wait_for_rows(tmp_path / "spool", 20)
        before = len(spool_rows(tmp_path / "spool"))
        offset.write_text("-3h\n")  # the wall clock steps back three hours
        wait_for_rows(tmp_path / "spool", before + 30)
        elapsed, _events = stop(agent)
    finally:
        workload.kill()
        workload.wait()
    rows = spool_rows(tmp_path / "spool")
    cpu = [float(row.split(",")[25]) for row in rows]  # process_cpu_usage
    after = cpu[before + 2 :]
    assert sum(1 for value in after if value > 0.05) >= len(after) * 0.8, after
    delivered_exactly_once(tmp_path)
    print(f"clock stepped back 3 h: exit 0 in {elapsed:.2f} s, CPU of new processes still "
          f"counted ({sum(after) / len(after):.2f} cores on average after the step)")  # fmt: skip


# --- malformed /proc and cgroup trees ----------------------------------------------------------

# where, file, content, measured through /proc (--pid) or the workload's cgroup, reported
BROKEN = {
    "cgroup-not-utf8": ("cgroup", "pod/workload/memory.current", b"\xff\xfe\n", False, True),
    "cgroup-400-digits": ("cgroup", "pod/workload/cpu.stat",
                          b"usage_usec " + b"9" * 400 + b"\nuser_usec 1\nsystem_usec 1\n",
                          False, True),
    "proc-cgroup-not-utf8": ("proc", "42/cgroup", b"0::/pod/\xffworkload\n", False, False),
    "smaps-malformed": ("proc", "42/smaps_rollup", b"garbage\nPss: lots kB\n", True, True),
    "io-400-digits": ("proc", "42/io", b"read_bytes: " + b"9" * 400 + b"\nwrite_bytes: 1\n",
                      True, True),
    "stat-400-digits": ("proc", "43/stat", b"43 (w) S 42 0 0 0 0 0 0 0 0 0 " + b"9" * 400
                        + b" 5 0 0 20 0 1 0 100 1 1" + b" 0" * 25 + b"\n", True, True),
    "node-stat-without-btime": ("proc", "stat", b"cpu  100 0 50 1000 10 0 5 0 0 0\n", True,
                                False),
    "node-meminfo-400-digits": ("proc", "meminfo", b"MemTotal: " + b"9" * 400 + b" kB\n", True,
                                True),
}  # fmt: skip


@pytest.mark.parametrize("broken", BROKEN.values(), ids=BROKEN.keys())
def test_a_malformed_kernel_file_blanks_its_cells_not_the_run(tmp_path: Path, broken):
    # Each of these crashed the agent at start (UnicodeDecodeError, OverflowError).
    where, relative, data, by_pid, reported_once = broken
    proc = fakefs.fake_proc(tmp_path / "proc")
    fakefs.fake_process(proc, 1, 0, "pause")
    fakefs.fake_process(proc, 42, 1, "python", cgroup="0::/pod/workload\n")
    fakefs.fake_process(proc, 43, 42, "worker", cgroup="0::/pod/workload\n")
    fakefs.cgroup_v2(tmp_path / "cgroup", "pod/workload")
    target = tmp_path / where / relative
    target.write_bytes(data)
    args = local_args(tmp_path, 42)
    if not by_pid:  # discovery: the workload's own cgroup is read where it is visible
        args = [arg for arg in args if arg not in ("--pid", "42")]
    args += ["--proc-root", str(tmp_path / "proc"), "--cgroup-root", str(tmp_path / "cgroup")]
    agent = start_agent(args)
    wait_for_rows(tmp_path / "spool", 20)
    elapsed, events = stop(agent)
    rows = delivered_exactly_once(tmp_path)
    errors = Counter((e["source"], e["kind"]) for e in events if e["event"] == "read_error")
    assert set(errors.values()) == {1}, errors  # once per source and kind, not once per tick
    name = relative.split("/")[-1]
    reported = [source for source, _kind in errors if source.endswith(name)]
    assert len(reported) == int(reported_once)
    assert "sample_failed" not in names(events)
    print(f"{relative} broken: exit 0 in {elapsed:.2f} s, {rows} rows, reported {reported}")


@needs_root
@pytest.mark.parametrize("output", ["elsewhere", "on the same disk"])
def test_a_disk_that_fills_before_the_stop_ends_with_exit_0(tmp_path: Path, workload, output: str):
    # The spool on a 256 KiB tmpfs that fills, stderr a pipe nobody reads for a while, then
    # SIGTERM: the state save at the stop raised ENOSPC and the agent exited 1.
    with tmpfs(tmp_path / "disk", "256k") as disk:
        out = disk / "out" if output == "on the same disk" else tmp_path / "out"
        args = [*local_args(disk, workload.pid), "--output-dir", str(out)]
        agent = start_agent(args, stderr=subprocess.PIPE)
        wait_for_rows(disk / "spool", 20)
        fill(disk / "filler")
        time.sleep(0.5)
        agent.send_signal(signal.SIGTERM)
        time.sleep(2)  # the log pipe stays unread meanwhile
        _out, err = agent.communicate(timeout=30)
        assert agent.returncode == 0, err[-3000:]
        events = log_events(err)
        [finished] = [event for event in events if event["event"] == "run_finished"]
        # The fault is said, not hidden: the finished mark (or run.json, or rows) not saved.
        assert "state_not_saved" in names(events) or finished["delivered"] is False
        assert finished["level"] == ("info" if finished["delivered"] else "error")
        # Nothing claimed delivered that is not: the chunks present hold spool rows once.
        rows = chunk_rows(dir_chunks(out))
        assert len(rows) == len(set(rows)) and set(rows) <= set(spool_rows(disk / "spool"))
        print(f"disk full at the stop, output {output}: exit {agent.returncode}, "
              f"{len(rows)} rows in chunks")  # fmt: skip
