"""Node figures: the parsers against the kernel's formats, and psutil's semantics on this host."""

from pathlib import Path

import psutil
import pytest

from sentinel_sidecar.measure.node import (
    NodeReader,
    parse_cpu,
    parse_diskstats,
    parse_meminfo,
    parse_net_dev,
)
from sentinel_sidecar.measure.procfs import clock_ticks
from tests.support.fakefs import CLOCK_TICKS, fake_proc, write

DISKSTATS = (  # Linux 5.5+: 20 fields; a disk, its partition, a loop device, a device-mapper
    "   8       0 sda 1000 10 20000 500 2000 20 40000 1000 0 1500 1500 0 0 0 0 100 10\n"
    "   8       1 sda1 900 5 18000 400 1900 15 38000 900 0 1400 1300 0 0 0 0 0 0\n"
    "   7       0 loop0 10 0 80 1 0 0 0 0 0 1 1 0 0 0 0 0 0\n"
    " 253       0 dm-0 5 0 10 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
)
NET_DEV = (
    "Inter-|   Receive                                                |  Transmit\n"
    " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs "
    "drop fifo colls carrier compressed\n"
    "    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n"
    "  eth0: 5000 50 0 0 0 0 0 0 7000 60 0 0 0 0 0 0\n"
    "  eth1: 1 1 0 0 0 0 0 0 2 1 0 0 0 0 0 0\n"
)


def test_cpu_line_in_user_system_and_busy_seconds():
    data = b"cpu  100 20 50 1000 10 3 5 7 11 13\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    user, system, busy = parse_cpu(data, 100)
    assert (user, system) == (1.2, 0.58)
    assert busy == pytest.approx((100 + 20 + 50 + 3 + 5 + 7) / 100)  # guest is inside user


def test_cpu_line_of_an_old_kernel_without_steal_and_guest():
    assert parse_cpu(b"cpu  100 0 50 1000 10 0 5\n", 100) == (1.0, 0.55, 1.55)


def test_stat_without_cpu_line_is_refused():
    with pytest.raises(ValueError):
        parse_cpu(b"intr 1 2 3\n", 100)


def test_meminfo_used_is_total_less_available():
    memory = parse_meminfo(
        b"MemTotal:       16000000 kB\nMemFree:         8000000 kB\nMemAvailable:   12000000 kB\n"
        b"Buffers:          100000 kB\nCached:          3000000 kB\nActive:          4000000 kB\n"
        b"Inactive:        2000000 kB\nSReclaimable:     200000 kB\nHugePages_Total:       0\n"
    )
    assert memory.used == 4000000 * 1024
    assert memory.cached == 3200000 * 1024
    assert (memory.free, memory.buffers) == (8000000 * 1024, 100000 * 1024)
    assert (memory.active, memory.inactive) == (4000000 * 1024, 2000000 * 1024)


def test_diskstats_sum_whole_devices_only():
    disks = {"sda", "loop0", "dm-0"}
    read, written = parse_diskstats(DISKSTATS.encode(), disks.__contains__)
    assert read == (20000 + 80 + 10) * 512
    assert written == 40000 * 512


def test_net_dev_skips_loopback():
    assert parse_net_dev(NET_DEV.encode()) == (5001, 7002)


def test_reader_on_a_fake_node(tmp_path: Path):
    proc = fake_proc(tmp_path / "proc")
    write(proc, "diskstats", DISKSTATS)
    write(proc, "net/dev", NET_DEV)
    sys_block = tmp_path / "sys" / "block"
    for name in ("sda", "loop0"):
        (sys_block / name).mkdir(parents=True)
    reader = NodeReader(proc, CLOCK_TICKS, disk_path=tmp_path, sys_block=sys_block)
    try:
        reading = reader.read(7)
        assert reading.processes == 7
        assert reading.cpu_user_s == 1.0
        assert reading.memory_used_mib == pytest.approx(4000000 / 1024)
        assert reading.disk_read_bytes == (20000 + 80) * 512
        assert reading.net_sent_bytes == 7002
        assert reading.disk_space_total_gb is not None and reading.disk_space_total_gb > 0
        (proc / "net" / "dev").write_text("garbage\n")  # the open file shows the new content
        (proc / "meminfo").write_text("nothing useful\n")
        again = reader.read(7)
        assert again.net_recv_bytes is None
        assert again.memory_used_mib is None
        assert again.cpu_user_s == 1.0
    finally:
        reader.close()


def test_a_missing_file_is_none_not_an_error(tmp_path: Path):
    proc = fake_proc(tmp_path / "proc")
    reader = NodeReader(proc, CLOCK_TICKS, disk_path=tmp_path / "absent")
    reading = reader.read(1)
    assert reading.disk_read_bytes is None and reading.net_recv_bytes is None
    assert reading.disk_space_total_gb is None
    assert reading.cpu_user_s == 1.0


def test_same_figures_as_psutil_on_this_host():
    reader = NodeReader(Path("/proc"), clock_ticks())
    ours = reader.read(1)
    cpu = psutil.cpu_times()
    memory = psutil.virtual_memory()
    disk = psutil.disk_io_counters()
    net = psutil.net_io_counters(pernic=True)
    reader.close()
    assert ours.cpu_user_s == pytest.approx(cpu.user + cpu.nice, abs=1.0)
    assert ours.cpu_system_s == pytest.approx(cpu.system + cpu.irq + cpu.softirq, abs=1.0)
    assert ours.memory_used_mib == pytest.approx(memory.used / 2**20, rel=0.05)
    assert ours.memory_cached_mib == pytest.approx(memory.cached / 2**20, rel=0.05)
    assert ours.memory_free_mib == pytest.approx(memory.free / 2**20, rel=0.05)
    if disk is not None:
        assert ours.disk_read_bytes == pytest.approx(disk.read_bytes, rel=0.01, abs=2**20)
        assert ours.disk_write_bytes == pytest.approx(disk.write_bytes, rel=0.01, abs=2**20)
    received = sum(counters.bytes_recv for name, counters in net.items() if name != "lo")
    assert ours.net_recv_bytes == pytest.approx(received, rel=0.01, abs=2**20)


def test_disk_space_as_psutil_counts_it(tmp_path: Path):
    reader = NodeReader(fake_proc(tmp_path / "proc"), CLOCK_TICKS, disk_path=tmp_path)
    reading = reader.read(1)
    usage = psutil.disk_usage(str(tmp_path))
    assert reading.disk_space_total_gb == usage.total / 1e9
    assert reading.disk_space_used_gb == pytest.approx(usage.used / 1e9, abs=0.01)
    assert reading.disk_space_free_gb == pytest.approx(usage.free / 1e9, abs=0.01)
