"""SIGTERM against peers that hang: the agent is done inside `shutdown_timeout` + 1 s, exits 0,
finishes the run with what was confirmed when the API still answers, and keeps the rest.

The peers misbehave as real ones do (tests/support/peers.py `hang`): accept and never answer, answer
after 30 s, or trickle the answer one byte every 2 s — the last two beat any per-read timeout.
"""

import json
import subprocess
import time
from pathlib import Path

import pytest

from sentinel_sidecar.spool.state import StateStore
from tests.support.agent import (
    log_events,
    run_args,
    sentinel_env,
    sigterm,
    start_agent,
    wait_until,
)
from tests.support.peers import REGION, MotoServer, S3Proxy

BUDGET = 5.0
HANGS = ["blackhole", "slow", "trickle"]


def start(spool: Path, pid: int, env: dict[str, str]) -> subprocess.Popen[str]:
    args = run_args(spool, "--interval", "0.1", "--upload-interval", "0.5", "--pid", str(pid),
                    "--shutdown-timeout", str(BUDGET))  # fmt: skip
    return start_agent(args, env)


def stop(agent: subprocess.Popen[str]) -> tuple[float, str]:
    """Seconds from SIGTERM to exit, and the agent's log."""
    elapsed, err = sigterm(agent, timeout=BUDGET + 30)
    print(f"exit {elapsed:.2f} s after SIGTERM")  # pytest -s shows the figures
    return elapsed, err


def uploaded(spool: Path) -> list[str]:
    state = StateStore(spool).load() if (spool / "state.json").exists() else None
    return list(state.uris()) if state is not None else []


def start_uploading(
    spool: Path, pid: int, env: dict[str, str], uploads: int
) -> subprocess.Popen[str]:
    """The agent, once it has `uploads` chunks confirmed."""
    agent = start(spool, pid, env)
    wait_until(lambda: len(uploaded(spool)) >= uploads, 30, f"{uploads} uploads")
    return agent


@pytest.mark.parametrize("hang", HANGS)
def test_s3_hanging_at_sigterm(tmp_path: Path, moto, proxy, sentinel, workload, hang: str):
    spool = tmp_path / "spool"
    agent = start_uploading(spool, workload.pid, sentinel_env(sentinel, proxy), 2)
    proxy.hang = hang
    time.sleep(1.0)  # the next upload is on its way to the hanging S3
    elapsed, err = stop(agent)
    assert elapsed <= BUDGET + 1, f"{elapsed:.1f} s after SIGTERM ({hang} S3)"
    [run] = sentinel.runs.values()
    [finish] = run.finishes  # the API still answers: the run is finished
    assert finish["data_uris"] == uploaded(spool)  # what was confirmed, nothing in flight
    assert any(event["event"] == "rows_not_uploaded" for event in log_events(err))


@pytest.mark.parametrize("hang", HANGS)
def test_api_hanging_at_sigterm(tmp_path: Path, moto, proxy, sentinel, workload, hang: str):
    spool = tmp_path / "spool"
    agent = start_uploading(spool, workload.pid, sentinel_env(sentinel, proxy), 1)
    sentinel.hang = hang
    elapsed, err = stop(agent)
    assert elapsed <= BUDGET + 1, f"{elapsed:.1f} s after SIGTERM ({hang} API)"
    assert not json.loads((spool / "state.json").read_text())["finished"]  # resumable
    [failed] = [event for event in log_events(err) if event["event"] == "shutdown_call_failed"]
    assert failed["call"] == "close of the run"


@pytest.mark.parametrize("hang", HANGS)
def test_direct_s3_hanging_at_sigterm(tmp_path: Path, moto: MotoServer, workload, hang: str):
    bucket = moto.new_bucket()
    proxy = S3Proxy(moto.port)
    try:
        spool = tmp_path / "spool"
        env = {"TRACKER_S3_URI": f"s3://{bucket}/direct", "S3_ENDPOINT_URL": proxy.endpoint,
               "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": moto.user["aws_access_key_id"],
               "AWS_SECRET_ACCESS_KEY": moto.user["aws_secret_access_key"]}  # fmt: skip
        agent = start_uploading(spool, workload.pid, env, 1)
        proxy.hang = hang
        elapsed, _err = stop(agent)
        assert elapsed <= BUDGET + 1, f"{elapsed:.1f} s after SIGTERM ({hang} S3)"
    finally:
        proxy.close()


def test_sigterm_with_the_first_upload_in_flight_never_goes_inline_too(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    # S3 stores the chunk at once but answers 30 s later: it may land, so the same rows must
    # not also go inline (they did: 9 rows both inline and in 0001.csv.gz).
    proxy.hang = "slow"
    spool = tmp_path / "spool"
    agent = start(spool, workload.pid, sentinel_env(sentinel, proxy))
    wait_until(lambda: any(e.method == "PUT" for e in proxy.log), 30, "the first PUT")
    elapsed, err = stop(agent)
    assert elapsed <= BUDGET + 1
    [run] = sentinel.runs.values()
    assert run.finishes == []  # not inline, and no empty data_uris either
    assert any(event["event"] == "run_not_finished" for event in log_events(err))
    assert not json.loads((spool / "state.json").read_text())["finished"]  # a restart resumes


def test_an_outage_is_retried_on_the_backoff_not_on_every_sample(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    # Past upload_threshold_bytes every sample used to wake the upload loop: ~1 failed PUT per
    # sample for the whole outage.
    proxy.down = True
    spool = tmp_path / "spool"
    args = run_args(spool, "--interval", "0.05", "--upload-interval", "1",
                    "--upload-threshold-bytes", "1", "--pid", str(workload.pid),
                    "--shutdown-timeout", "2")  # fmt: skip
    agent = start_agent(args, sentinel_env(sentinel, proxy))
    wait_until(lambda: sentinel.registrations() == 1, 20, "registration")
    time.sleep(8)
    _elapsed, err = stop(agent)
    puts = [entry for entry in proxy.log if entry.method == "PUT"]
    # backoff steps of ≤1, ≤2, ≤4, ≤8 s (with jitter) + the drain at the stop: not one per 50 ms
    assert 2 <= len(puts) <= 8, len(puts)
    failing = [event for event in log_events(err) if event["event"] == "delivery_failing"]
    assert len(failing) == 1  # one line for the outage, not one per attempt
