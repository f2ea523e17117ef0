"""Builders of real-shaped /proc and cgroup trees under a tmp dir, in the kernel's exact formats."""

from __future__ import annotations

from pathlib import Path

CLOCK_TICKS = 100


def write(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_proc(root: Path, btime: int = 1_700_000_000) -> Path:
    """A /proc with the node-level files psutil reads."""
    write(
        root,
        "stat",
        f"cpu  100 0 50 1000 10 0 5 0 0 0\ncpu0 100 0 50 1000 10 0 5 0 0 0\nbtime {btime}\n",
    )
    write(
        root,
        "meminfo",
        "MemTotal:       16000000 kB\nMemFree:         8000000 kB\nMemAvailable:   12000000 kB\n"
        "Buffers:          100000 kB\nCached:          3000000 kB\nSwapCached:            0 kB\n"
        "Active:          4000000 kB\nInactive:        2000000 kB\nShmem:             10000 kB\n"
        "SReclaimable:     200000 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n",
    )
    return root


def fake_process(
    root: Path,
    pid: int,
    ppid: int,
    comm: str,
    *,
    state: str = "S",
    flags: int = 0x00400100,
    utime_ticks: int = 10,
    stime_ticks: int = 5,
    start_ticks: int = 100,
    pss_kib: int = 2048,
    read_bytes: int = 4096,
    write_bytes: int = 8192,
    cgroup: str = "0::/\n",
) -> None:
    """One process directory with stat, statm, smaps_rollup, io and cgroup."""
    fields = [str(pid), f"({comm})", state, str(ppid), "0", "0", "0", "0", str(flags)]
    fields += ["0"] * 4
    fields += [str(utime_ticks), str(stime_ticks), "0", "0", "20", "0", "1", "0"]
    fields += [str(start_ticks), "10000000", "500", *["0"] * 25]
    write(root, f"{pid}/stat", " ".join(fields) + "\n")
    write(root, f"{pid}/statm", "2500 500 100 10 0 300 0\n")
    write(
        root,
        f"{pid}/smaps_rollup",
        "55c4c8e5f000-7ffd6a1fe000 ---p 00000000 00:00 0                          [rollup]\n"
        f"Rss:                4000 kB\nPss:                {pss_kib} kB\n"
        "Shared_Clean:        1000 kB\nShared_Dirty:           0 kB\n"
        "Private_Clean:       1000 kB\nPrivate_Dirty:       2000 kB\nSwap:                  0 kB\n",
    )
    write(
        root,
        f"{pid}/io",
        f"rchar: 100\nwchar: 200\nsyscr: 1\nsyscw: 1\nread_bytes: {read_bytes}\n"
        f"write_bytes: {write_bytes}\ncancelled_write_bytes: 0\n",
    )
    write(root, f"{pid}/cgroup", cgroup)
    write(root, f"{pid}/cmdline", f"{comm}\0")


def cgroup_v2(root: Path, path: str = "", *, usage_usec: int = 5_000_000) -> Path:
    """A v2 cgroup directory with every file the reader uses."""
    directory = root / path
    write(root, "cgroup.controllers", "cpuset cpu io memory hugetlb pids rdma misc\n")
    write(
        directory,
        "cpu.stat",
        f"usage_usec {usage_usec}\nuser_usec 3000000\nsystem_usec 2000000\n"
        "core_sched.force_idle_usec 0\nnr_periods 10\nnr_throttled 2\nthrottled_usec 250000\n"
        "nr_bursts 0\nburst_usec 0\n",
    )
    write(directory, "cpu.max", "200000 100000\n")
    write(directory, "memory.current", "104857600\n")
    write(directory, "memory.peak", "209715200\n")
    write(directory, "memory.max", "max\n")
    write(
        directory,
        "memory.stat",
        "anon 52428800\nfile 41943040\nkernel 1048576\nshmem 0\nactive_anon 50000000\n"
        "inactive_anon 2428800\nactive_file 20971520\ninactive_file 20971520\n",
    )
    write(directory, "memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    write(
        directory,
        "io.stat",
        "259:0 rbytes=1048576 wbytes=2097152 rios=10 wios=20 dbytes=0 dios=0\n"
        "8:0 rbytes=1000 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
    )
    write(directory, "pids.current", "7\n")
    write(directory, "cgroup.procs", "42\n43\n")
    return directory


def cgroup_v1(root: Path, path: str = "", *, joint_cpu: bool = True) -> Path:
    """v1 controller mounts (cpu,cpuacct joint like systemd does) with one cgroup at `path`."""
    cpu_mount = "cpu,cpuacct" if joint_cpu else "cpuacct"
    cpu = root / cpu_mount / path
    write(cpu, "cpuacct.usage", "3500000000\n")
    write(cpu, "cpuacct.stat", "user 250\nsystem 100\n")
    write(cpu, "cpu.stat", "nr_periods 10\nnr_throttled 1\nthrottled_time 500000000\n")
    write(cpu, "cpu.cfs_quota_us", "50000\n")
    write(cpu, "cpu.cfs_period_us", "100000\n")
    write(cpu, "cgroup.procs", "42\n")
    if not joint_cpu:
        write(root / "cpu" / path, "cpu.stat", "nr_periods 10\nnr_throttled 1\nthrottled_time 0\n")
    memory = root / "memory" / path
    write(memory, "memory.usage_in_bytes", "104857600\n")
    write(memory, "memory.max_usage_in_bytes", "157286400\n")
    write(memory, "memory.limit_in_bytes", "9223372036854771712\n")
    write(
        memory,
        "memory.stat",
        "cache 1000\nrss 2000\ntotal_cache 41943040\ntotal_rss 52428800\n"
        "total_inactive_file 10485760\ntotal_active_file 31457280\n",
    )
    write(memory, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    write(
        root / "blkio" / path,
        "blkio.throttle.io_service_bytes_recursive",
        "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n"
        "8:0 Total 12288\n8:16 Read 1000\n8:16 Write 0\nTotal 13288\n",
    )
    write(root / "pids" / path, "pids.current", "3\n")
    return memory
