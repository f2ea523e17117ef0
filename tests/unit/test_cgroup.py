from pathlib import Path

import pytest

from sentinel_sidecar.measure.cgroup import (
    CgroupFormatError,
    CgroupReader,
    Layout,
    parse_blkio,
    parse_cpu_max,
    parse_flat_keyed,
    parse_nested_keyed,
    parse_proc_cgroup,
    parse_single,
)
from tests.support.fakefs import cgroup_v1, cgroup_v2, write


def test_single_value_and_max():
    assert parse_single("104857600\n") == 104857600
    assert parse_single("max\n") is None


@pytest.mark.parametrize("text", ["", "12 13\n", "lots\n"])
def test_single_value_rejects_malformed(text):
    with pytest.raises(CgroupFormatError):
        parse_single(text)


def test_flat_keyed_parses_cpu_stat():
    assert parse_flat_keyed("usage_usec 10\nuser_usec 7\n\n") == {"usage_usec": 10, "user_usec": 7}


def test_flat_keyed_names_the_bad_line():
    with pytest.raises(CgroupFormatError, match="line 2"):
        parse_flat_keyed("usage_usec 10\nuser_usec\n")


def test_nested_keyed_parses_io_stat():
    parsed = parse_nested_keyed("8:0 rbytes=5 wbytes=6 rios=1\n8:16 rbytes=1 wbytes=0\n")
    assert parsed == {
        "8:0": {"rbytes": 5, "wbytes": 6, "rios": 1},
        "8:16": {"rbytes": 1, "wbytes": 0},
    }


def test_nested_keyed_rejects_missing_equals():
    with pytest.raises(CgroupFormatError, match="key=value"):
        parse_nested_keyed("8:0 rbytes 5\n")


def test_cpu_max_in_cores():
    assert parse_cpu_max("150000 100000\n") == 1.5
    assert parse_cpu_max("max 100000\n") is None
    with pytest.raises(CgroupFormatError):
        parse_cpu_max("150000\n")


def test_blkio_sums_devices_and_skips_total():
    text = "8:0 Read 10\n8:0 Write 20\n8:0 Total 30\n8:16 Read 5\nTotal 35\n"
    assert parse_blkio(text) == {"Read": 15, "Write": 20, "Total": 30}


def test_proc_cgroup_of_hybrid_host():
    text = "9:name=systemd:/\n4:memory:/job\n2:cpu,cpuacct:/job\n0::/job\n"
    assert parse_proc_cgroup(text) == {
        "name=systemd": "/",
        "memory": "/job",
        "cpu,cpuacct": "/job",
        "": "/job",
    }


def test_v2_tree_reads_every_counter(tmp_path: Path):
    cgroup_v2(tmp_path, "kubepods/pod1/ctr")
    reader = CgroupReader(tmp_path)
    assert reader.layout is Layout.V2
    reading = reader.read(reader.locate({"": "/kubepods/pod1/ctr"}))
    assert reading.cpu_usage_s == 5.0
    assert (reading.cpu_user_s, reading.cpu_system_s) == (3.0, 2.0)
    assert reading.cpu_throttled_s == 0.25
    assert reading.cpu_limit_cores == 2.0
    assert reading.memory_current_bytes == 104857600
    assert reading.memory_peak_bytes == 209715200
    assert reading.memory_limit_bytes is None
    assert reading.memory_working_set_bytes == 104857600 - 20971520
    assert reading.oom_kills == 1
    assert (reading.io_read_bytes, reading.io_write_bytes) == (1048576 + 1000, 2097152)
    assert reading.pids == 7
    assert reader.pids(reader.locate({"": "/kubepods/pod1/ctr"})) == [42, 43]


def test_v2_missing_files_are_none_not_errors(tmp_path: Path):
    write(tmp_path, "cgroup.controllers", "cpu memory\n")
    write(tmp_path, "job/cpu.stat", "usage_usec 1000000\nuser_usec 600000\nsystem_usec 400000\n")
    reader = CgroupReader(tmp_path)
    reading = reader.read(reader.locate({"": "/job"}))
    assert reading.cpu_usage_s == 1.0
    assert reading.memory_current_bytes is None
    assert reading.io_read_bytes is None
    assert reading.memory_working_set_bytes is None


def test_v2_malformed_file_raises_with_its_path(tmp_path: Path):
    directory = cgroup_v2(tmp_path, "job")
    write(directory, "memory.stat", "anon 12\ninactive_file twelve\n")
    reader = CgroupReader(tmp_path)
    with pytest.raises(CgroupFormatError) as caught:
        reader.read(reader.locate({"": "/job"}))
    assert caught.value.path == directory / "memory.stat"
    assert "memory.stat" in str(caught.value)


def test_v1_tree_with_joint_cpu_mount(tmp_path: Path):
    cgroup_v1(tmp_path, "docker/abc")
    reader = CgroupReader(tmp_path, clock_ticks=100)
    assert reader.layout is Layout.V1
    membership = parse_proc_cgroup(
        "12:pids:/docker/abc\n8:memory:/docker/abc\n6:blkio:/docker/abc\n3:cpu,cpuacct:/docker/abc\n"
    )
    reading = reader.read(reader.locate(membership))
    assert reading.cpu_usage_s == 3.5
    assert (reading.cpu_user_s, reading.cpu_system_s) == (2.5, 1.0)
    assert reading.cpu_throttled_s == 0.5
    assert reading.cpu_limit_cores == 0.5
    assert reading.memory_current_bytes == 104857600
    assert reading.memory_peak_bytes == 157286400
    assert reading.memory_limit_bytes is None  # v1 "unlimited" is PAGE_COUNTER_MAX
    assert reading.memory_working_set_bytes == 104857600 - 10485760
    assert reading.oom_kills == 2
    assert (reading.io_read_bytes, reading.io_write_bytes) == (5096, 8192)
    assert reading.pids == 3


def test_v1_separate_cpu_and_cpuacct_mounts(tmp_path: Path):
    cgroup_v1(tmp_path, "job", joint_cpu=False)
    reader = CgroupReader(tmp_path)
    reading = reader.read(reader.locate({"cpu": "/job", "cpuacct": "/job", "memory": "/job"}))
    assert reading.cpu_usage_s == 3.5
    assert reading.cpu_throttled_s == 0.0


def test_hybrid_reads_v1_controllers_and_unified_cpu(tmp_path: Path):
    cgroup_v1(tmp_path, "job")
    write(tmp_path, "unified/cgroup.controllers", "")
    write(tmp_path, "unified/job/cpu.stat", "usage_usec 9000000\nuser_usec 1\nsystem_usec 2\n")
    reader = CgroupReader(tmp_path)
    assert reader.layout is Layout.HYBRID
    membership = {"cpu,cpuacct": "/job", "memory": "/job", "": "/job"}
    reading = reader.read(reader.locate(membership))
    assert reading.cpu_usage_s == 3.5  # v1 cpuacct wins where both exist
    assert reading.memory_current_bytes == 104857600


def test_hybrid_without_v1_cpu_falls_back_to_unified(tmp_path: Path):
    write(tmp_path, "memory/job/memory.usage_in_bytes", "100\n")
    write(tmp_path, "unified/cgroup.controllers", "")
    write(
        tmp_path,
        "unified/job/cpu.stat",
        "usage_usec 9000000\nuser_usec 6000000\nsystem_usec 3000000\n",
    )
    reader = CgroupReader(tmp_path)
    reading = reader.read(reader.locate({"memory": "/job", "": "/job"}))
    assert reading.cpu_usage_s == 9.0
    assert reading.memory_current_bytes == 100


def test_paths_outside_the_namespace_are_not_exposed(tmp_path: Path):
    cgroup_v2(tmp_path, "job")
    reader = CgroupReader(tmp_path)
    assert not reader.locate({"": "/../other-container"}).any()
    assert not reader.locate({"": "/does/not/exist"}).any()


def test_cgroup_removed_midway_reads_as_missing(tmp_path: Path):
    cgroup_v2(tmp_path, "job")
    reader = CgroupReader(tmp_path)
    dirs = reader.locate({"": "/job"})
    for path in (tmp_path / "job").iterdir():
        path.unlink()
    (tmp_path / "job").rmdir()
    assert reader.read(dirs).cpu_usage_s is None
    assert reader.pids(dirs) == []


def test_dirs_for_path_accepts_absolute_and_relative(tmp_path: Path):
    cgroup_v2(tmp_path, "system.slice/job.service")
    reader = CgroupReader(tmp_path)
    absolute = reader.dirs_for_path(str(tmp_path / "system.slice/job.service"))
    relative = reader.dirs_for_path("/system.slice/job.service")
    assert absolute == relative
    assert absolute.unified == tmp_path / "system.slice/job.service"


def test_this_machine_cgroup_root_reads_without_error():
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        pytest.skip("no cgroup filesystem")
    reader = CgroupReader(root)
    reading = reader.read(reader.locate(parse_proc_cgroup(Path("/proc/self/cgroup").read_text())))
    assert reading.cpu_usage_s is None or reading.cpu_usage_s > 0


def test_locate_is_remembered_per_membership(tmp_path: Path):
    cgroup_v2(tmp_path, "job")
    reader = CgroupReader(tmp_path)
    first = reader.locate({"": "/job"})
    assert reader.locate({"": "/job"}) is first
    assert reader.locate({"": "/other"}) != first
