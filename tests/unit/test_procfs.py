import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sentinel_sidecar.measure.node import NodeReader
from sentinel_sidecar.measure.proc_reader import IO_EVERY_TICKS, PSS_REFRESH_SECONDS, ProcReader
from sentinel_sidecar.measure.process import (
    ProcessInfo,
    main_pid,
    own_tree,
    select_tree,
    select_workload,
)
from sentinel_sidecar.measure.procfs import clock_ticks, parse_io, parse_stat
from tests.support.fakefs import fake_proc, fake_process

ROOT = Path(__file__).resolve().parent.parent.parent


def info(pid: int, ppid: int, name: str = "x", created: float = 0.0) -> ProcessInfo:
    return ProcessInfo(pid, ppid, name, created)


def test_workload_excludes_pause_and_own_tree():
    processes = [
        info(1, 0, "pause"),
        info(10, 0, "sh"),  # the sidecar container's entrypoint wrapper
        info(11, 10, "sentinel-sidecar"),
        info(12, 11, "helper"),
        info(20, 0, "python", created=5.0),
        info(21, 20, "worker"),
        info(30, 0, "nginx", created=9.0),
    ]
    workload = select_workload(processes, own_pid=11)
    assert sorted(process.pid for process in workload) == [20, 21, 30]
    assert own_tree(processes, 11) == {10, 11, 12}
    assert main_pid(workload) == 20


def test_pid_one_that_is_not_pause_is_workload():
    workload = select_workload([info(1, 0, "python"), info(5, 0, "sidecar")], own_pid=5)
    assert [process.pid for process in workload] == [1]


def test_select_tree_takes_root_and_descendants():
    processes = [info(5, 1), info(6, 5), info(7, 6), info(8, 1)]
    assert sorted(p.pid for p in select_tree(processes, 5)) == [5, 6, 7]


def test_fake_proc_tree_is_discovered_and_summed(tmp_path: Path):
    proc = fake_proc(tmp_path / "proc")
    fake_process(proc, 1, 0, "pause")
    fake_process(proc, 7, 0, "sentinel-sidecar")
    fake_process(proc, 20, 0, "python", utime_ticks=300, stime_ticks=100, pss_kib=4096)
    fake_process(proc, 21, 20, "worker", state="R")
    fake_process(proc, 22, 20, "defunct", state="Z")
    fake_process(proc, 2, 0, "kthreadd", flags=0x00208040)
    (proc / "23").mkdir()  # vanished between listing and reading: no files left
    reader = ProcReader(proc)
    processes = reader.processes()
    assert sorted(p.pid for p in processes) == [1, 7, 20, 21, 22]
    assert [p.pid for p in processes if p.zombie] == [22]  # its CPU still counts until reaped
    workload = select_workload(processes, own_pid=7)
    assert sorted(p.pid for p in workload) == [20, 21, 22]
    assert main_pid(workload) == 20
    python = next(p for p in processes if p.pid == 20)
    assert (python.cpu_user_s, python.cpu_system_s) == (3.0, 1.0)
    assert python.started == 1.0  # starttime 100 ticks after boot
    usage = reader.usage(python)
    assert usage is not None
    assert usage.memory_bytes == 4096 * 1024
    assert (usage.read_bytes, usage.write_bytes) == (4096, 8192)
    assert reader.membership(processes[2]) == {"": "/"}
    system = NodeReader(proc, clock_ticks()).read(len(processes))
    assert system.processes == 5
    assert system.memory_free_mib == pytest.approx(8000000 / 1024)
    assert system.cpu_user_s == pytest.approx(1.0)


def test_process_vanishing_after_listing_is_skipped(tmp_path: Path):
    proc = fake_proc(tmp_path / "proc")
    fake_process(proc, 1, 0, "pause")
    fake_process(proc, 20, 0, "python")
    reader = ProcReader(proc)
    listed = reader.processes()
    assert [p.pid for p in listed] == [1, 20]
    shutil.rmtree(proc / "20")
    assert reader.usage(listed[1]) is None
    assert [p.pid for p in reader.processes()] == [1]


def test_real_proc_finds_children_and_excludes_own_tree():
    reader = ProcReader(Path("/proc"))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            processes = reader.processes()
            if any(p.pid == child.pid for p in processes):
                break
            time.sleep(0.05)
        workload = select_workload(processes, own_pid=os.getpid())
        pids = {p.pid for p in workload}
        assert os.getpid() not in pids
        assert child.pid not in pids  # our own child belongs to our tree
        assert os.getppid() not in pids
        tree = select_tree(processes, child.pid)
        assert [p.pid for p in tree] == [child.pid]
        usage = reader.usage(tree[0])
        assert usage is not None and usage.memory_bytes > 0
        assert usage.read_bytes is not None  # our own child: IO is readable
    finally:
        child.kill()
        child.wait()
    assert reader.usage(tree[0]) is None
    assert child.pid not in {p.pid for p in reader.processes()}


def test_real_proc_sees_a_foreign_process_as_workload(tmp_path: Path):
    # A detached grandchild (double fork) is not in our tree: it is what a workload looks like.
    pid_file = tmp_path / "pid"
    script = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "    time.sleep(30)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "detached process did not start"
        time.sleep(0.05)
    foreign = int(pid_file.read_text())
    try:
        workload = select_workload(ProcReader(Path("/proc")).processes(), own_pid=os.getpid())
        assert foreign in {p.pid for p in workload}
    finally:
        os.kill(foreign, 9)


def test_stat_parsing_handles_names_with_spaces_and_parentheses():
    line = b"42 (my (odd) name) R 7 42 42 0 -1 4194560 0 0 0 0 250 50 70 30 20 0 1 0 500 1 3"
    process = parse_stat(42, line + b" 0" * 30 + b"\n", clock_ticks=100)
    assert process is not None
    assert (process.name, process.ppid, process.rss_bytes) == ("my (odd) name", 7, 3 * 4096)
    assert (process.cpu_user_s, process.cpu_system_s, process.started) == (2.5, 0.5, 5.0)
    assert (process.children_user_s, process.children_system_s) == (0.7, 0.3)
    assert not process.zombie


def test_real_proc_has_no_kernel_threads_in_the_listing():
    names = {p.name for p in ProcReader(Path("/proc")).processes()}
    assert not any(name.startswith(("kworker/", "ksoftirqd/")) for name in names)


def test_pss_is_refreshed_periodically_and_tracks_rss_in_between():
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    reader = ProcReader(Path("/proc"), monotonic=clock)

    def me() -> ProcessInfo:
        return next(p for p in reader.processes() if p.pid == os.getpid())

    first = reader.usage(me())
    ballast = bytearray(64 * 1024 * 1024)
    ballast[::4096] = b"\1" * len(ballast[::4096])
    grown = reader.usage(me())  # before the next refresh: last PSS + RSS growth
    assert first is not None and grown is not None
    assert grown.memory_bytes - first.memory_bytes > 60 * 1024 * 1024
    clock.now += 2 * PSS_REFRESH_SECONDS
    refreshed = reader.usage(me())
    assert refreshed is not None
    assert abs(refreshed.memory_bytes - grown.memory_bytes) < 16 * 1024 * 1024
    del ballast


def test_io_file_parsing():
    data = b"rchar: 100\nwchar: 200\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\n"
    assert parse_io(data + b"cancelled_write_bytes: 0\n") == (4096, 8192)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_another_users_process_gives_rss_and_unknown_io():
    # As a non-root agent would see a workload of another uid: io and smaps_rollup denied.
    as_other_user = ["setpriv", "--reuid", "65532", "--regid", "65532", "--clear-groups"]
    probe = subprocess.run([*as_other_user, sys.executable, "-c", "import psutil"], timeout=60,
                           capture_output=True, cwd=ROOT)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("uid 65532 cannot read this Python environment")
    script = (
        "import json; from pathlib import Path\n"
        "from sentinel_sidecar.measure.proc_reader import ProcReader\n"
        "reader = ProcReader(Path('/proc'))\n"
        "target = next(p for p in reader.processes() if p.pid == 1)\n"
        "usage = reader.usage(target)\n"
        "print(json.dumps([usage.memory_bytes, usage.read_bytes, usage.write_bytes]))\n"
    )
    result = subprocess.run(
        [*as_other_user, sys.executable, "-c", script],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    memory, read_bytes, write_bytes = json.loads(result.stdout)
    statm = Path("/proc/1/statm").read_text().split()
    assert abs(memory - int(statm[1]) * os.sysconf("SC_PAGE_SIZE")) < 4 * 1024 * 1024  # RSS
    assert read_bytes is None and write_bytes is None


def test_identity_only_listing_reads_new_pids_only(tmp_path: Path):
    proc = fake_proc(tmp_path / "proc")
    fake_process(proc, 1, 0, "pause")
    fake_process(proc, 20, 0, "python", utime_ticks=100)
    reader = ProcReader(proc)
    assert [p.cpu_user_s for p in reader.processes(fresh=False)] == [0.1, 1.0]
    fake_process(proc, 20, 0, "python", utime_ticks=900)  # CPU moved on
    fake_process(proc, 21, 20, "worker")  # a new process
    listed = {p.pid: p for p in reader.processes(fresh=False)}
    assert sorted(listed) == [1, 20, 21]
    assert listed[20].cpu_user_s == 1.0  # known pid: not re-read
    assert reader.processes()[1].cpu_user_s == 9.0  # fresh listing reads everything


def test_io_file_in_another_order_is_still_parsed():
    data = b"read_bytes: 7\nrchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nwrite_bytes: 9\n"
    assert parse_io(data) == (7, 9)


def test_cached_proc_files_are_closed_when_their_process_is_gone():
    reader = ProcReader(Path("/proc"))
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        listed = next(p for p in reader.processes() if p.pid == child.pid)
        assert reader.usage(listed) is not None
        open_before = len(os.listdir("/proc/self/fd"))
    finally:
        child.kill()
        child.wait()
    assert reader.usage(listed) is None  # the cached fd answers ESRCH, never another process
    reader.processes()
    assert len(os.listdir("/proc/self/fd")) < open_before
    reader.close()


def test_a_sleeping_process_io_is_read_within_a_few_ticks_and_never_lost(tmp_path: Path):
    # io is read again only when the stat line changed, or every IO_EVERY_TICKS ticks: IO done
    # while the stat line stays the same shows up late, whole, on a later tick.
    proc = fake_proc(tmp_path / "proc")
    fake_process(proc, 1, 0, "pause")
    fake_process(proc, 20, 0, "sleeper", read_bytes=1000, write_bytes=2000)
    reader = ProcReader(proc)

    def io() -> tuple[int | None, int | None]:
        [sleeper] = [p for p in reader.processes() if p.pid == 20]
        usage = reader.usage(sleeper)
        assert usage is not None
        return usage.read_bytes, usage.write_bytes

    assert io() == (1000, 2000)
    seen = [io()]
    fake_process(proc, 20, 0, "sleeper", read_bytes=5000, write_bytes=9000)  # same stat line
    for _ in range(IO_EVERY_TICKS):
        seen.append(io())
    assert seen[-1] == (5000, 9000)  # at most IO_EVERY_TICKS ticks late
    assert all(value in ((1000, 2000), (5000, 9000)) for value in seen)  # whole, never partial
    fake_process(proc, 20, 0, "sleeper", utime_ticks=99, read_bytes=7000, write_bytes=9500)
    assert io() == (7000, 9500)  # the stat line moved: read at once
