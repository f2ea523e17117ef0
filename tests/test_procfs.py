import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.procfs import ProcessInfo, ProcReader, main_pid, own_tree, select_tree, select_workload
from tests.fakefs import fake_proc, fake_process


def info(pid: int, ppid: int, name: str = "x", created: float = 0.0) -> ProcessInfo:
    return ProcessInfo(pid, ppid, name, created)


def test_workload_excludes_pause_kernel_threads_and_own_tree():
    processes = [
        info(1, 0, "pause"),
        info(2, 0, "kthreadd"),
        info(3, 2, "kworker/0:0"),
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
    (proc / "23").mkdir()  # vanished between listing and reading: no files left
    reader = ProcReader(proc)
    processes = reader.processes()
    assert sorted(p.pid for p in processes) == [1, 7, 20, 21]
    workload = select_workload(processes, own_pid=7)
    assert sorted(p.pid for p in workload) == [20, 21]
    usage = reader.usage(20)
    assert usage is not None
    assert (usage.cpu_user_s, usage.cpu_system_s) == (3.0, 1.0)
    assert usage.memory_bytes == 4096 * 1024
    assert (usage.read_bytes, usage.write_bytes) == (4096, 8192)
    assert reader.membership(processes[2]) == {"": "/"}
    system = reader.system(len(processes))
    assert system.processes == 4
    assert system.memory_free_mib == pytest.approx(8000000 / 1024)
    assert system.cpu_user_s == pytest.approx(1.0)


def test_process_vanishing_after_listing_is_skipped(tmp_path: Path):
    proc = fake_proc(tmp_path / "proc")
    fake_process(proc, 1, 0, "pause")
    fake_process(proc, 20, 0, "python")
    reader = ProcReader(proc)
    assert [p.pid for p in reader.processes()] == [1, 20]
    shutil.rmtree(proc / "20")
    assert reader.usage(20) is None
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
        usage = reader.usage(child.pid)
        assert usage is not None and usage.memory_bytes > 0
    finally:
        child.kill()
        child.wait()
    assert reader.usage(child.pid) is None
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
