"""GPU columns without a GPU: a stand-in libnvidia-ml.so.1 compiled from tests/support/nvml_stub.c
(the NVML entry points the agent uses, real signatures and struct layouts) serves scripted
devices, processes and utilization, loaded through pynvml's own loading path
(`CDLL("libnvidia-ml.so.1")`, found through LD_LIBRARY_PATH in a fresh process)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sentinel_sidecar.measure.gpu import visible_devices
from tests.support.agent import (
    agent_env,
    chunk_rows,
    dir_chunks,
    segments,
    spool_rows,
    start_agent,
    wait_for_rows,
)

STUB = Path(__file__).resolve().parent.parent / "support" / "nvml_stub.c"
A100 = "NVIDIA_A100-SXM4-40GB"


@pytest.fixture(scope="session")
def stub_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is missing (.ci/run installs it)")
    directory = tmp_path_factory.mktemp("nvml")
    library = directory / "libnvidia-ml.so.1"
    subprocess.run(["gcc", "-Wall", "-Werror", "-shared", "-fPIC", "-o", str(library), str(STUB)],
                   check=True, timeout=120)  # fmt: skip
    return directory


def gpus(*lines: str) -> str:
    return "\n".join(lines) + "\n"


FOUR = gpus(
    f"device GPU-0000-aaaa {A100} 40960 10240 80 250000 5000",
    f"device GPU-1111-bbbb {A100} 40960 20480 40 200000 4000",
    f"device GPU-2222-cccc {A100} 40960 0 0 60000 1000",
    f"device GPU-3333-dddd {A100} 40960 1024 10 90000 2000",
)

READ = textwrap.dedent("""
    import json, sys
    from sentinel_sidecar import log
    from sentinel_sidecar.measure.gpu import GpuReader
    log.configure("info", "json")  # on stderr
    from sentinel_sidecar.measure.values import ReadErrors
    errors = ReadErrors()
    reader = GpuReader(errors)
    pids, visible = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    readings = []
    for _ in range(int(sys.argv[3])):
        reading = reader.figures(set(pids), None if visible is None else set(visible))
        readings.append(reading.__dict__)
    print(json.dumps({"available": reader.available, "reason": reader.reason,
                      "facts": reader.facts(), "readings": readings, "errors": errors.count}))
""")


def read(
    stub_dir: Path | None,
    tmp_path: Path,
    config: str,
    pids: tuple[int, ...] = (),
    visible: list[str] | None = None,
    ticks: int = 1,
) -> tuple[dict[str, Any], str]:
    """GpuReader in a fresh process (its own dlopen), with `config` scripted; its output and
    its log."""
    (tmp_path / "nvml.cfg").write_text(config)
    env = agent_env({"NVML_STUB_CONFIG": str(tmp_path / "nvml.cfg"),
                     "LD_LIBRARY_PATH": str(stub_dir) if stub_dir else ""})  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", READ, json.dumps(list(pids)), json.dumps(visible), str(ticks)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), result.stderr


def test_without_the_library_every_gpu_column_is_0_and_one_line_says_why(tmp_path: Path):
    out, log = read(None, tmp_path, "")
    assert out["available"] is False and "libnvidia-ml.so.1" in out["reason"]
    [reading] = out["readings"]
    assert set(reading.values()) == {0, None}
    assert out["facts"] == {}
    assert log.count('"event": "gpu"') == 1


def test_one_gpu_whose_pids_are_not_ours_gives_its_device_figures(stub_dir, tmp_path: Path):
    config = gpus(f"device GPU-0000-aaaa {A100} 40960 10240 75 250000 5000",
                  "process 0 999999 8192 60")  # fmt: skip
    out, log = read(stub_dir, tmp_path, config, pids=(4242,))
    [reading] = out["readings"]
    assert out["facts"] == {"host_gpu_model": "NVIDIA A100-SXM4-40GB", "host_gpu_count": 1,
                            "host_gpu_memory_mib": 40960}  # fmt: skip
    assert (reading["system_usage"], reading["system_vram_mib"], reading["system_utilized"]) == (
        0.75,
        10240.0,
        1,
    )
    assert (reading["process_usage"], reading["process_vram_mib"]) == (0.75, 10240.0)
    assert reading["power_w"] == 250.0
    assert '"path": "device"' in log


def test_four_gpus_and_a_workload_restricted_by_uuid_or_index(stub_dir, tmp_path: Path):
    by_uuid, _ = read(stub_dir, tmp_path, FOUR, visible=["GPU-1111-bbbb", "GPU-3333-dddd"])
    by_index, _ = read(stub_dir, tmp_path, FOUR, visible=["1", "3"])
    everything, _ = read(stub_dir, tmp_path, FOUR)
    for out in (by_uuid, by_index):
        [reading] = out["readings"]
        assert reading["system_usage"] == pytest.approx(0.8 + 0.4 + 0.1)
        assert (
            reading["system_vram_mib"] == 10240 + 20480 + 1024 and reading["system_utilized"] == 3
        )
        assert reading["process_usage"] == pytest.approx(0.4 + 0.1)
        assert reading["process_vram_mib"] == 20480 + 1024 and reading["process_utilized"] == 2
        assert reading["power_w"] == pytest.approx(200 + 90)
    [reading] = everything["readings"]
    assert reading["process_vram_mib"] == reading["system_vram_mib"]
    assert everything["facts"]["host_gpu_count"] == 4
    assert everything["facts"]["host_gpu_memory_mib"] == 4 * 40960


def test_pids_that_match_give_the_processes_own_figures(stub_dir, tmp_path: Path):
    config = FOUR + gpus("process 0 4242 6144 55", "process 0 777777 4096 25",
                         "process 1 4243 2048 0")  # fmt: skip
    out, log = read(stub_dir, tmp_path, config, pids=(4242, 4243))
    [reading] = out["readings"]
    assert reading["process_vram_mib"] == 6144 + 2048  # not the stranger's 4096
    assert reading["process_usage"] == pytest.approx(0.55) and reading["process_utilized"] == 1
    assert reading["system_vram_mib"] == 10240 + 20480 + 1024
    assert '"path": "process"' in log


def test_a_mig_slice_counts_with_its_own_memory(stub_dir, tmp_path: Path):
    config = gpus(f"device GPU-0000-aaaa {A100} 40960 0 0 100000 0",
                  "mig 0 MIG-aaaa-0001 10240 3072", "mig 0 MIG-aaaa-0002 20480 5120")  # fmt: skip
    mine, _ = read(stub_dir, tmp_path, config, visible=["MIG-aaaa-0002"])
    [reading] = mine["readings"]
    assert reading["system_vram_mib"] == 3072 + 5120
    assert reading["process_vram_mib"] == 5120


def test_a_gpu_lost_mid_run_is_reported_once_and_the_others_go_on(stub_dir, tmp_path: Path):
    out, log = read(stub_dir, tmp_path, FOUR + "lost 0 2\n", ticks=5)
    first, *_, last = out["readings"]
    assert first["system_vram_mib"] == 10240 + 20480 + 1024
    assert last["system_vram_mib"] == 20480 + 1024  # GPU 0 fell off the bus
    assert log.count('"event": "read_error"') == 1 and "GPU is lost" in log
    assert out["errors"] == 1  # not asked again


def test_visible_devices_values():
    assert visible_devices([None, None]) is None
    assert visible_devices(["all"]) is None
    assert visible_devices(["GPU-a,GPU-b", "1"]) == {"GPU-a", "GPU-b", "1"}
    assert visible_devices(["none"]) == set() and visible_devices(["void", None]) == set()


@pytest.fixture
def gpu_workload() -> Iterator[subprocess.Popen[bytes]]:
    """A workload that holds GPU 1 and 3, as the device plugin's NVIDIA_VISIBLE_DEVICES says."""
    env = {**os.environ, "NVIDIA_VISIBLE_DEVICES": "GPU-1111-bbbb,3"}
    process = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.05)"],
                               env=env)  # fmt: skip
    yield process
    process.kill()
    process.wait()


def test_the_agent_fills_the_gpu_columns_of_the_workloads_gpus(stub_dir, tmp_path: Path,
                                                               gpu_workload):  # fmt: skip
    (tmp_path / "nvml.cfg").write_text(FOUR)
    env = {"NVML_STUB_CONFIG": str(tmp_path / "nvml.cfg"), "LD_LIBRARY_PATH": str(stub_dir)}
    agent = start_agent(["run", "--spool-dir", str(tmp_path / "spool"), "--output-dir",
                         str(tmp_path / "out"), "--interval", "0.1", "--upload-interval", "0.5",
                         "--pid", str(gpu_workload.pid), "--health-port", "0",
                         "--schema", "extended"], env)  # fmt: skip
    wait_for_rows(tmp_path / "spool", 10)
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    [segment] = segments(tmp_path / "spool")
    lines = segment.read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[2:]]
    for row in rows:
        assert (row["system_gpu_usage"], row["system_gpu_vram_mib"]) == ("1.3000", "31744.000")
        assert (row["process_gpu_usage"], row["process_gpu_vram_mib"]) == ("0.5000", "21504.000")
        assert (row["system_gpu_utilized"], row["process_gpu_utilized"]) == ("3", "2")
        assert row["gpu_power_w"] == "290.0" and float(row["gpu_energy_j"]) > 0
    [identity] = [json.loads(line) for line in err.splitlines() if '"identity"' in line]
    assert identity["host_gpu_count"] == "4 (host)"
    assert identity["host_gpu_model"] == "NVIDIA A100-SXM4-40GB (host)"


def test_without_a_gpu_the_columns_stay_0(tmp_path: Path, workload):
    agent = start_agent(["run", "--spool-dir", str(tmp_path / "spool"), "--output-dir",
                         str(tmp_path / "out"), "--interval", "0.1", "--pid", str(workload.pid),
                         "--health-port", "0"], {"LD_LIBRARY_PATH": ""})  # fmt: skip
    wait_for_rows(tmp_path / "spool", 5)
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err[-2000:]
    rows = spool_rows(tmp_path / "spool")
    assert chunk_rows(dir_chunks(tmp_path / "out")) == rows
    assert all(row.split(",")[18:21] == ["0", "0", "0"] for row in rows)
    assert all(row.rstrip("\n").split(",")[29:32] == ["0", "0", "0"] for row in rows)
