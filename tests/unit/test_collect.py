from pathlib import Path

import pytest
from structlog.testing import capture_logs

from sentinel_sidecar.measure.accounting import Counters
from sentinel_sidecar.measure.cgroup import CgroupReader
from sentinel_sidecar.measure.collect import Collector
from sentinel_sidecar.measure.node import NodeReader, SystemReading
from sentinel_sidecar.measure.proc_reader import ProcReader
from sentinel_sidecar.measure.procfs import clock_ticks
from sentinel_sidecar.measure.reading import Reading, WorkloadReading
from sentinel_sidecar.measure.rows import (
    EXTENDED_COLUMNS,
    SENTINEL_COLUMNS,
    Schema,
    columns,
    make_row,
)
from sentinel_sidecar.schedule import Ticker
from tests.support.fakefs import cgroup_v2, fake_proc, fake_process, write


def system(**overrides: float | int | None) -> SystemReading:
    values: dict[str, float | int | None] = dict(
        processes=10,
        cpu_user_s=100.0,
        cpu_system_s=50.0,
        cpu_busy_s=150.0,
        memory_free_mib=1000.0,
        memory_used_mib=500.0,
        memory_buffers_mib=10.0,
        memory_cached_mib=200.0,
        memory_active_mib=300.0,
        memory_inactive_mib=100.0,
        disk_read_bytes=1000,
        disk_write_bytes=2000,
        disk_space_total_gb=100.0,
        disk_space_used_gb=40.0,
        disk_space_free_gb=60.0,
        net_recv_bytes=500,
        net_sent_bytes=700,
    )
    values.update(overrides)
    return SystemReading(**values)  # type: ignore[arg-type]


def reading(at: float, sys: SystemReading, workload: WorkloadReading) -> Reading:
    return Reading(timestamp=1_700_000_000 + at, monotonic=at, system=sys, workload=workload)


def test_sentinel_schema_has_the_32_columns_in_order():
    assert len(SENTINEL_COLUMNS) == 32
    assert SENTINEL_COLUMNS[0] == "timestamp"
    assert SENTINEL_COLUMNS[21] == "process_pid"
    assert columns(Schema.EXTENDED) == SENTINEL_COLUMNS + EXTENDED_COLUMNS


def test_row_holds_deltas_rates_and_empty_unknowns():
    before = reading(
        0.0,
        system(),
        WorkloadReading(
            main_pid=20,
            process_count=2,
            counters={
                "pid:20": Counters(10.0, 2.0, 100, 200),
                "pid:21": Counters(1.0, 0.0, 0, 0),
            },
            memory_bytes=0,
        ),
    )
    after = reading(
        2.0,
        system(
            cpu_user_s=101.0,
            cpu_system_s=50.5,
            cpu_busy_s=153.0,
            disk_read_bytes=5096,
            net_recv_bytes=None,
        ),
        WorkloadReading(
            main_pid=20,
            process_count=3,
            counters={
                "pid:20": Counters(11.5, 2.5, 1124, 200),  # +1.5 user, +0.5 system, +1024 read
                "pid:21": Counters(1.0, 0.0, 0, 0),
                "pid:22": Counters(0.5, 0.0, 0, 4096),  # new since before: counts from zero
            },
            memory_bytes=300 * 1024 * 1024,
        ),
    )
    row = dict(zip(SENTINEL_COLUMNS, make_row(before, after, Schema.SENTINEL), strict=True))
    assert row["timestamp"] == "1700000002.000"
    assert row["system_utime"] == "1.00"
    assert row["system_stime"] == "0.50"
    assert row["system_cpu_usage"] == "1.5000"
    assert row["system_disk_read_bytes"] == "4096"
    assert row["system_net_recv_bytes"] == ""  # unknown, not zero
    gpu = [row[name] for name in SENTINEL_COLUMNS if "_gpu_" in name]
    assert gpu == ["0"] * 6  # no GPU: 0, as the reference clients write and Sentinel reads
    assert row["process_pid"] == "20"
    assert row["process_children"] == "2"
    assert row["process_utime"] == "2.0000"
    assert row["process_stime"] == "0.5000"
    assert row["process_cpu_usage"] == "1.2500"
    assert row["process_memory_mib"] == "300.000"
    assert row["process_disk_read_bytes"] == "1024"
    assert row["process_disk_write_bytes"] == "4096"


def test_row_without_workload_leaves_process_cells_empty():
    empty = WorkloadReading(main_pid=None, process_count=0)
    row = dict(
        zip(
            SENTINEL_COLUMNS,
            make_row(reading(0, system(), empty), reading(1, system(), empty), Schema.SENTINEL),
            strict=True,
        )
    )
    process = [name for name in SENTINEL_COLUMNS if name.startswith("process_")]
    assert all(row[name] == "" for name in process if "_gpu_" not in name)


def test_counter_reset_never_gives_a_negative_delta():
    before = reading(0, system(), WorkloadReading(1, 1, {"pid:1": Counters(10.0, 5.0, 100, 100)}))
    after = reading(
        1, system(disk_read_bytes=0), WorkloadReading(1, 1, {"pid:1": Counters(1.0, 1.0, 1, 1)})
    )
    row = dict(zip(SENTINEL_COLUMNS, make_row(before, after, Schema.SENTINEL), strict=True))
    assert row["process_utime"] == "0.0000"
    assert row["system_disk_read_bytes"] == "0"


def test_ticker_keeps_schedule_and_skips_missed_ticks():
    ticker = Ticker(1.0, start=100.0)
    assert ticker.next_after(100.2) == 101.0
    assert ticker.next_after(101.9) == 102.0  # a slow tick does not shift the next one
    assert ticker.next_after(105.5) == 106.0  # ticks 103-105 were missed: skipped, no burst
    assert ticker.next_after(106.01) == 107.0


def _tree(
    tmp_path: Path, workload_cgroup: str, sidecar_cgroup: str
) -> tuple[ProcReader, CgroupReader]:
    proc = fake_proc(tmp_path / "proc")
    fake_process(proc, 1, 0, "pause")
    fake_process(proc, 7, 0, "sidecar", cgroup=f"0::{sidecar_cgroup}\n")
    fake_process(proc, 42, 0, "python", utime_ticks=100, cgroup=f"0::{workload_cgroup}\n")
    fake_process(proc, 43, 42, "worker", utime_ticks=100, cgroup=f"0::{workload_cgroup}\n")
    root = tmp_path / "cgroup"
    cgroup_v2(root, "pod/workload")
    write(root, "pod/sidecar/cpu.stat", "usage_usec 1\nuser_usec 1\nsystem_usec 0\n")
    return ProcReader(proc), CgroupReader(root)


def collector_for(procs: ProcReader, cgroups: CgroupReader, **options) -> Collector:
    """A collector on these readers, its node figures from the same /proc and error count."""
    node = NodeReader(procs.proc_root, clock_ticks(), errors=procs.errors)
    return Collector(procs, node, cgroups, **options)


def test_collector_uses_the_workload_cgroup_when_exposed(tmp_path: Path):
    procs, cgroups = _tree(tmp_path, "/pod/workload", "/pod/sidecar")
    result = collector_for(procs, cgroups, own_pid=7).read()
    assert result.workload.main_pid == 42
    assert result.workload.process_count == 2
    [(key, counters)] = [item for item in result.workload.counters.items() if item[0] != "proc"]
    assert key.startswith("cgroup:")
    assert (counters.cpu_user_s, counters.cpu_system_s) == (3.0, 2.0)
    assert result.workload.memory_bytes == 104857600 - 20971520


def test_collector_sums_proc_when_the_cgroup_is_shared_with_the_sidecar(tmp_path: Path):
    procs, cgroups = _tree(tmp_path, "/pod/workload", "/pod/workload")
    collector = Collector(
        procs, NodeReader(procs.proc_root, clock_ticks()), cgroups, own_pid=7, uptime=lambda: 100.0
    )
    with capture_logs() as logs:
        first = collector.read()
    proc = tmp_path / "proc"
    fake_process(proc, 42, 0, "python", utime_ticks=250, cgroup="0::/pod/workload\n")
    fake_process(proc, 43, 42, "worker", utime_ticks=130, cgroup="0::/pod/workload\n")
    second = collector.read()
    assert list(second.workload.counters) == ["proc"]
    before, after = first.workload.counters["proc"], second.workload.counters["proc"]
    assert after.cpu_user_s - before.cpu_user_s == pytest.approx(1.5 + 0.3)
    assert second.workload.memory_bytes == 2 * 2048 * 1024  # PSS of both
    assert [(e["path"], e["reason"]) for e in logs if e["event"] == "measuring"] == [
        ("proc", "workload cgroup shared with the sidecar")
    ]


def test_collector_sums_proc_when_cgroup_is_not_visible(tmp_path: Path):
    procs, cgroups = _tree(tmp_path, "/../other-pod/ctr", "/")
    with capture_logs() as logs:
        result = Collector(
            procs, NodeReader(procs.proc_root, clock_ticks()), cgroups, own_pid=7
        ).read()
    assert list(result.workload.counters) == ["proc"]
    assert result.workload.process_count == 2
    [measuring] = [entry for entry in logs if entry["event"] == "measuring"]
    assert measuring["path"] == "proc"
    assert measuring["reason"] == "workload cgroup outside this cgroup namespace"


def test_malformed_cgroup_file_is_logged_once_and_sampling_survives(tmp_path: Path):
    procs, cgroups = _tree(tmp_path, "/pod/workload", "/pod/sidecar")
    write(tmp_path / "cgroup", "pod/workload/memory.current", "garbage here\n")
    collector = collector_for(procs, cgroups, own_pid=7)
    with capture_logs() as logs:
        first = collector.read()
        second = collector.read()
    warnings = [
        entry
        for entry in logs
        if entry["event"] == "read_error" and entry["source"].endswith("memory.current")
    ]
    assert len(warnings) == 1  # logged once, counted every time
    assert procs.errors.count == 2 + 2 * 2  # and the fake /proc has no diskstats nor net/dev
    # Falls back to /proc for that tick rather than dropping the workload.
    assert list(first.workload.counters) == list(second.workload.counters) == ["proc"]
    assert second.workload.process_count == 2
    assert second.workload.memory_bytes == 2 * 2048 * 1024


def test_collector_cgroup_override_reads_that_cgroup(tmp_path: Path):
    procs, cgroups = _tree(tmp_path, "/pod/workload", "/pod/sidecar")
    result = Collector(
        procs,
        NodeReader(procs.proc_root, clock_ticks()),
        cgroups,
        cgroup="/pod/workload",
        own_pid=7,
    ).read()
    assert result.workload.process_count == 2
    assert result.workload.main_pid == 42
    assert len(result.workload.cgroups) == 1


def test_extended_schema_appends_cgroup_columns(tmp_path: Path):
    procs, cgroups = _tree(tmp_path, "/pod/workload", "/pod/sidecar")
    collector = collector_for(procs, cgroups, own_pid=7)
    first, second = collector.read(), collector.read()
    cells = make_row(first, second, Schema.EXTENDED)
    assert len(cells) == 32 + len(EXTENDED_COLUMNS)
    extended = dict(zip(EXTENDED_COLUMNS, cells[32:], strict=True))
    assert extended["cgroup_memory_working_set_mib"] == "80.000"
    assert extended["cgroup_memory_peak_mib"] == "200.000"
    assert extended["cgroup_memory_limit_mib"] == ""  # memory.max is "max"
    assert extended["cgroup_cpu_limit_cores"] == "2.000"
    assert extended["cgroup_cpu_throttled_seconds"] == "0.0000"
    assert extended["cgroup_oom_kills"] == "0"
    assert extended["cgroup_pids"] == "7"
