import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.agent import (
    agent_env,
    chunk_rows,
    dir_chunks,
    run_args,
    segments,
    sigterm,
    spool_rows,
    start_agent,
    wait_for_rows,
)

ROOT = Path(__file__).resolve().parent.parent.parent
# docs/examples.py regenerates the README's demo output; the test reads it back the same way.
_spec = importlib.util.spec_from_file_location("examples", ROOT / "docs" / "examples.py")
assert _spec is not None and _spec.loader is not None
examples = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(examples)


def agent_args(tmp_path: Path, *extra: str) -> list[str]:
    return run_args(tmp_path / "spool", "--interval", "0.1", "--upload-interval", "0.5",
                    "--max-chunk-bytes", "1500", *extra, output=tmp_path / "out")  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT])
def test_signal_delivers_every_row_exactly_once(tmp_path: Path, workload, signum):
    agent = start_agent(agent_args(tmp_path, "--pid", str(workload.pid)))
    wait_for_rows(tmp_path / "spool", 15)
    agent.send_signal(signum)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    spooled = spool_rows(tmp_path / "spool")
    delivered = chunk_rows(dir_chunks(tmp_path / "out"))
    assert delivered == spooled
    assert len(dir_chunks(tmp_path / "out")) > 1  # several chunks, so the cursor really moved
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["rows"] == len(spooled)
    assert summary["chunks"] == len(dir_chunks(tmp_path / "out"))
    assert summary["bytes_not_uploaded"] == 0
    assert summary["exit_code"] is None and summary["run_status"] == "finished"
    assert summary["started_at"] < summary["finished_at"]
    assert all(row.split(",")[21] == str(workload.pid) for row in spooled)
    assert '"event": "stop_requested"' in err


def test_local_mode_never_loads_tls_or_asyncio(tmp_path: Path, workload):
    # Neither is used without a network destination (sentinel_sidecar/deferred.py): they cost
    # ~6 MiB of RSS. The health server and the metadata probe import http.client, which
    # imports ssl without touching it.
    agent = start_agent(agent_args(tmp_path, "--pid", str(workload.pid), "--health-port", "0"))
    wait_for_rows(tmp_path / "spool", 3)
    maps = Path(f"/proc/{agent.pid}/maps").read_text()
    sigterm(agent)
    loaded = {line.rsplit("/", 1)[-1] for line in maps.splitlines() if ".so" in line}
    assert not [name for name in loaded if name.startswith(("_ssl", "libssl", "_asyncio"))]


def test_agent_finishes_when_the_workload_exits_and_reports_its_exit_code(tmp_path: Path):
    spool = tmp_path / "spool"
    spool.mkdir()
    wrapper = f"sleep 1.5; code=3; echo $code > {spool}/exit_code; exit $code"
    child = subprocess.Popen(["sh", "-c", wrapper])
    agent = start_agent(agent_args(tmp_path, "--pid", str(child.pid)))
    child.wait(10)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert "workload_exited" in err
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["exit_code"] == 3 and summary["run_status"] == "failed"
    assert chunk_rows(dir_chunks(tmp_path / "out")) == spool_rows(spool)


def killed_mid_run(tmp_path: Path, pid: int) -> list[str]:
    """An agent SIGKILLed after 25 rows; the arguments to start it again with."""
    args = agent_args(tmp_path, "--pid", str(pid))
    first = start_agent(args)
    wait_for_rows(tmp_path / "spool", 25)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    return args


def test_sigkill_then_restart_resumes_without_loss_or_duplicates(tmp_path: Path, workload):
    args = killed_mid_run(tmp_path, workload.pid)
    uploaded_before = len(dir_chunks(tmp_path / "out"))
    assert uploaded_before >= 1
    second = start_agent(args)
    wait_for_rows(tmp_path / "spool", 40)
    second.send_signal(signal.SIGTERM)
    _out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert "run_resumed" in err
    assert chunk_rows(dir_chunks(tmp_path / "out")) == spool_rows(tmp_path / "spool")
    assert len(dir_chunks(tmp_path / "out")) > uploaded_before


def test_a_spool_left_by_an_older_version_is_resumed_with_its_chunk_names(tmp_path: Path, workload):
    # What an older agent killed mid-run leaves: one metrics.csv, 4-digit chunks and every URI
    # in state.json.
    args = killed_mid_run(tmp_path, workload.pid)
    out, state_file = tmp_path / "out", tmp_path / "spool" / "state.json"
    state = json.loads(state_file.read_text())
    assert state["seq"] >= 1
    uris = []
    for seq in range(1, state["seq"] + 1):
        old = out / f"{seq:04d}.csv.gz"
        (out / f"{seq:06d}.csv.gz").rename(old)
        uris.append(str(old))
    for field in ("chunk_base", "name_digits", "rows_merged", "rows_dropped", "sample_base"):
        del state[field]
    state_file.write_text(json.dumps({**state, "uploaded_uris": uris}))
    [segment] = segments(tmp_path / "spool")  # the first segment is what metrics.csv held
    segment.rename(tmp_path / "spool" / "metrics.csv")
    second = start_agent(args)
    wait_for_rows(tmp_path / "spool", 40)
    second.send_signal(signal.SIGTERM)
    _out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err[-3000:]
    assert "run_resumed" in err and "state_invalid" not in err and "spool_upgraded" in err
    names = sorted(path.name for path in out.glob("*.csv.gz"))
    assert names == [f"{seq:04d}.csv.gz" for seq in range(1, len(names) + 1)]
    assert len(names) > len(uris)
    summary = json.loads((out / "run.json").read_text())
    assert summary["uris"] == [str(out / name) for name in names]
    rows = chunk_rows([(out / name).read_bytes() for name in names])
    assert rows == spool_rows(tmp_path / "spool")


def test_a_new_run_sets_the_finished_run_aside(tmp_path: Path, workload):
    args = agent_args(tmp_path, "--pid", str(workload.pid))
    for run in range(2):
        agent = start_agent(args)
        deadline = time.monotonic() + 20
        while run and not list((tmp_path / "spool").glob("previous-*/state.json")):
            assert time.monotonic() < deadline, "the finished run was not set aside"
            time.sleep(0.05)
        wait_for_rows(tmp_path / "spool", 5)
        agent.send_signal(signal.SIGTERM)
        agent.communicate(timeout=30)
        assert agent.returncode == 0
    # The finished run's rows were all delivered: its segments are gone, its state kept aside.
    [aside] = (tmp_path / "spool").glob("previous-*")
    assert [path.name for path in aside.iterdir()] == ["state.json"]
    [previous] = list((tmp_path / "out").glob("previous-*"))
    assert (previous / "run.json").exists()
    assert chunk_rows(dir_chunks(tmp_path / "out")) == spool_rows(tmp_path / "spool")


def test_discovery_mode_runs_and_stops_on_sigterm(tmp_path: Path):
    agent = start_agent(agent_args(tmp_path, "--schema", "extended"))
    wait_for_rows(tmp_path / "spool", 3)
    agent.send_signal(signal.SIGTERM)
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    header = segments(tmp_path / "spool")[0].read_text().splitlines()[0].split(",")
    assert header[-3:] == ["cgroup_pids", "gpu_power_w", "gpu_energy_j"] and len(header) == 41


def test_demo_tracks_its_workload_and_prints_what_the_readme_shows(tmp_path: Path):
    agent = start_agent(["demo", "--seconds", "6", "--dir", str(tmp_path)])
    out, err = agent.communicate(timeout=60)
    assert agent.returncode == 0, err
    assert "memory request" in out and "cpu request" in out  # the report on its output
    printed = out.replace(str(tmp_path), "/tmp/sentinel-demo-x1")
    shown = examples.shown_demo_output((ROOT / "README.md").read_text())
    assert examples.skeleton(printed) == examples.skeleton(shown), "run: python docs/examples.py"
    summary = json.loads((tmp_path / "output" / "run.json").read_text())
    assert summary["exit_code"] == 0
    rows = chunk_rows(dir_chunks(tmp_path / "output"))
    assert rows == spool_rows(tmp_path / "spool")
    peak_memory = max(float(row.split(",")[26] or 0) for row in rows)
    assert peak_memory > 100  # the demo workload holds 200 MiB for a while


@pytest.mark.parametrize("in_pod", [True, False])
def test_a_workload_never_seen_ends_the_run_after_workload_wait(tmp_path: Path, in_pod: bool):
    # `demo --seconds 0`: the workload was gone before the first sample and the agent ran on
    # until SIGTERM (11 minutes were seen). Here /proc shows no process at all.
    (tmp_path / "proc").mkdir()
    started = time.monotonic()
    agent = start_agent(
        agent_args(tmp_path, "--workload-wait", "1", "--proc-root", str(tmp_path / "proc")),
        {"KUBERNETES_SERVICE_HOST": "127.0.0.1"} if in_pod else {},
    )
    _out, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    assert time.monotonic() - started < 10
    [hint] = [json.loads(line) for line in err.splitlines() if "no_workload_processes" in line]
    assert hint["ending"] is True
    # The pod's usual cause only in a pod; outside one, what to use instead.
    assert ("shareProcessNamespace" in hint["hint"]) is in_pod
    assert ("run -- CMD" in hint["hint"]) is not in_pod
    assert (tmp_path / "out" / "run.json").exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_a_non_root_run_on_the_default_spool_names_the_setting_to_change(workload):
    result = subprocess.run(
        [*as_uid_65532(), sys.executable, "-m", "sentinel_sidecar", "run", "--pid",
         str(workload.pid), "--health-port", "0"],
        capture_output=True, text=True, timeout=60, env=agent_env(),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if "config error" in line]
    assert "--spool-dir" in line and "TRACKER_SPOOL_DIR" in line and "Permission denied" in line


def as_uid_65532() -> list[str]:
    as_other_user = ["setpriv", "--reuid", "65532", "--regid", "65532", "--clear-groups"]
    probe = subprocess.run([*as_other_user, sys.executable, "-c", "import structlog"],
                           timeout=60, capture_output=True)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip("uid 65532 cannot read this Python environment")
    return as_other_user


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
@pytest.mark.parametrize("in_pod", [False, True])
def test_an_unwritable_spool_dir_never_outlives_the_workload(tmp_path: Path, in_pod: bool):
    # A non-root agent on a root-owned --spool-dir tracking an 8 s job was still running 72
    # minutes later. Outside a pod: exit 2 at once. In a pod (where an emptyDir may still be
    # coming): retried, visible in the log, and the run ends with its workload.
    # Reachable by uid 65532 (pytest's own temp dirs are 0700), writable by root only.
    spool = Path(tempfile.mkdtemp(prefix="sentinel-root-owned-")) / "spool"
    spool.parent.chmod(0o755)
    spool.mkdir(mode=0o755)
    job = subprocess.Popen(["sleep", "2"])
    started = time.monotonic()
    try:
        result = subprocess.run(
            [*as_uid_65532(), sys.executable, "-m", "sentinel_sidecar", "run", "--pid",
             str(job.pid), "--spool-dir", str(spool), "--interval", "0.2", "--health-port", "0"],
            capture_output=True, text=True, timeout=60,
            env=agent_env({"KUBERNETES_SERVICE_HOST": "127.0.0.1"} if in_pod else {}),
        )  # fmt: skip
    finally:
        job.wait()
        shutil.rmtree(spool.parent)
    elapsed = time.monotonic() - started
    if not in_pod:
        assert result.returncode == 2, result.stderr[-2000:]
        [line] = [line for line in result.stderr.splitlines() if "config error" in line]
        assert "spool_dir (--spool-dir, TRACKER_SPOOL_DIR)" in line and "Permission denied" in line
        return
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stderr.splitlines()]
    names = [event["event"] for event in events]
    assert names.count("spool_unusable") == 1 and "workload_exited" in names
    [unrecorded] = [event for event in events if event["event"] == "run_not_recorded"]
    assert unrecorded["attempts"] >= 5
    print(f"unusable spool in a pod, 2 s workload: agent done after {elapsed:.1f} s")
    assert elapsed < 2 + 5


def test_the_agent_says_what_it_does(tmp_path: Path, workload):
    args = agent_args(tmp_path, "--pid", str(workload.pid), "--progress-interval", "0.5")
    quiet = start_agent(args, {"SENTINEL_API_TOKEN_FILE": "", "TRACKER_TEAM": "ml"})
    wait_for_rows(tmp_path / "spool", 15)
    quiet.send_signal(signal.SIGTERM)
    _out, err = quiet.communicate(timeout=30)
    events = [json.loads(line) for line in err.splitlines()]
    # The identity probe runs in the background: its line may come at any point.
    in_order = [e["event"] for e in events if e["event"] != "identity"]
    assert in_order[:3] == ["settings", "gpu", "run_started"]
    assert "available" in events[1]  # with or without a GPU, one line says so
    [identity] = [e for e in events if e["event"] == "identity"]
    assert identity["team"] == "ml (settings)" and identity["host_vcpus"].endswith("(host)")
    summary = json.loads((tmp_path / "out" / "run.json").read_text())
    assert summary["identity"]["team"] == {"value": "ml", "source": "settings"}
    assert isinstance(summary["identity"]["host_vcpus"]["value"], int)  # data, not "2 (host)"
    settings = events[0]
    assert settings["mode"] == "local" and settings["team"] == "ml"
    assert settings["interval"] == 0.1 and settings["spool_dir"] == str(tmp_path / "spool")
    [*_, progress] = [e for e in events if e["event"] == "progress"]
    assert progress["rows"] > 0 and "pending_bytes" in progress and "next_upload_in_s" in progress
    [finished] = [e for e in events if e["event"] == "run_finished"]
    assert finished["delivered"] is True
    assert finished["where"] == str(tmp_path / "out" / "run.json")
    assert not [e for e in events if e["level"] == "debug"]  # off by default
    loud = start_agent([*args, "--log-level", "debug", "--spool-dir", str(tmp_path / "s2")])
    wait_for_rows(tmp_path / "s2", 10)
    loud.send_signal(signal.SIGTERM)
    _out, err = loud.communicate(timeout=30)
    debug = {json.loads(line)["event"] for line in err.splitlines() if '"debug"' in line}
    assert {"sampled", "chunk_sending"} <= debug
