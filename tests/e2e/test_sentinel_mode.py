"""End-to-end: the real CLI against the Sentinel test server and moto S3 (through the proxy)."""

import gzip
import json
import re
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import requests

from tests.support.agent import (
    chunk_rows,
    delivered,
    log_events,
    run_args,
    scrape,
    sentinel_env,
    sigterm,
    spool_rows,
    start_agent,
    wait_for_rows,
    wait_until,
)
from tests.support.peers import (
    REGION,
    SENTINEL_HEADER,
    S3Proxy,
    SentinelServer,
    free_port,
)


def args(spool: Path, pid: int, *extra: str) -> list[str]:
    return run_args(spool, "--interval", "0.2", "--upload-interval", "1", "--pid", str(pid),
                    *extra)  # fmt: skip


def stop(agent: subprocess.Popen[str]) -> str:
    return sigterm(agent, timeout=40)[1]


def test_happy_path_every_row_reaches_s3_once_and_the_run_is_finished(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    port = free_port()
    spool = tmp_path / "spool"
    agent = start_agent(
        args(spool, workload.pid, "--health-port", str(port)), sentinel_env(sentinel, proxy)
    )
    wait_until(lambda: sentinel.registrations() == 1, 20, "registration")
    wait_for_rows(spool, 45)  # ~10 s at 0.2 s
    ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    metrics = scrape(port)
    assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    err = stop(agent)
    assert ready.status_code == 200
    assert "sentinel_sidecar_chunks_uploaded_total" in metrics
    assert metrics["sentinel_sidecar_credentials_seconds_left"] > 0
    [run] = sentinel.runs.values()
    print("register body:", json.dumps(run.body))  # pytest -s shows what the server received
    assert "pid" not in run.body
    assert run.body["host_id"] == "node-a" and run.body["host_hostname"] == "job-abc"
    assert json.loads(run.body["command"]) == ["python", "train.py", "--epochs", "3"]
    assert run.body["host_vcpus"] >= 1 and run.body["host_memory_mib"] > 0
    assert run.body["host_storage_gb"] > 0
    assert not any(key.startswith("cloud_") for key in run.body)
    uris, rows = delivered(moto, sentinel)
    assert rows == spool_rows(spool)
    assert len(uris) >= 5
    [finish] = run.finishes
    print("finish body:", json.dumps(finish))
    finished_at = finish.pop("finished_at")
    assert finish == {"run_status": "finished", "data_source": "s3", "data_uris": uris}
    assert datetime.fromisoformat(finished_at.replace("Z", "+00:00")).tzinfo is not None
    for key in moto.objects(sentinel.bucket, run.prefix.removeprefix(f"s3://{sentinel.bucket}/")):
        stored = moto.client("s3").head_object(Bucket=sentinel.bucket, Key=key)
        assert stored["ContentType"] == "application/gzip" and "ContentEncoding" not in stored
    events = log_events(err)
    [done] = [event for event in events if event["event"] == "run_finished_on_api"]
    # run_id on the lines of every thread once registered (the main thread's too)
    late = [
        e for e in events if e["event"] in ("chunk_uploaded", "run_finished", "run_finished_on_api")
    ]
    assert {e.get("run_id") for e in late} == {run.run_id} and len(late) >= 3
    assert done["processing_status"] == "completed" and done["processing_rows"] == len(rows)
    state = json.loads((spool / "state.json").read_text())
    assert state["finished"] and state["run_id"] == run.run_id and state["seq"] == len(uris)


@pytest.mark.parametrize(
    ("announced", "real"),
    [(2.0, None), (3600.0, 2.0)],
    ids=["short-expires_at-refreshed-ahead", "token-dies-early-refreshed-on-ExpiredToken"],
)
def test_credentials_expiring_every_few_seconds_lose_nothing(
    tmp_path: Path, moto, proxy, sentinel, workload, announced, real
):
    sentinel.credentials_ttl = announced
    sentinel.token_lifetime = real
    spool = tmp_path / "spool"
    agent = start_agent(args(spool, workload.pid), sentinel_env(sentinel, proxy))
    wait_for_rows(spool, 45)
    stop(agent)
    [run] = sentinel.runs.values()
    assert run.refreshes >= 3
    _uris, rows = delivered(moto, sentinel)
    assert rows == spool_rows(spool)
    failures_per_token = Counter(entry.token for entry in proxy.expired_puts())
    assert all(count == 1 for count in failures_per_token.values())
    if real is not None:
        assert failures_per_token, "the ExpiredToken path was not exercised"
    assert len(run.finishes) == 1


def test_s3_outage_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    spool = tmp_path / "spool"
    agent = start_agent(args(spool, workload.pid), sentinel_env(sentinel, proxy))
    wait_until(lambda: len(moto.objects(sentinel.bucket)) >= 2, 20, "first uploads")
    proxy.down = True
    time.sleep(4)
    proxy.down = False
    uploaded = len(moto.objects(sentinel.bucket))
    wait_until(lambda: len(moto.objects(sentinel.bucket)) > uploaded, 30, "uploads after outage")
    err = stop(agent)
    changes = [e["event"] for e in log_events(err) if e["event"].startswith("delivery_")]
    assert changes == ["delivery_failing", "delivery_recovered"]  # per change, not per attempt
    _uris, rows = delivered(moto, sentinel)
    assert rows == spool_rows(spool)
    assert len(set(rows)) == len(rows)


def test_a_chunk_s3_refuses_for_good_is_set_aside_and_delivery_goes_on(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    # S3 answers BadDigest to the first chunk twice: no retry of that body will pass, so it is
    # kept in refused/ and the rows after it are delivered, under the name it did not take.
    proxy.refuse_puts = 2
    spool, port = tmp_path / "spool", free_port()
    agent = start_agent(
        args(spool, workload.pid, "--upload-interval", "0.5", "--max-chunk-refusals", "2",
             "--health-port", str(port)),
        sentinel_env(sentinel, proxy),
    )  # fmt: skip
    refused_dir = spool / "refused"
    wait_until(lambda: refused_dir.is_dir() and any(refused_dir.iterdir()), 30, "a chunk aside")
    wait_until(lambda: len(moto.objects(sentinel.bucket)) >= 2, 30, "uploads after it")
    assert scrape(port)["sentinel_sidecar_chunks_refused_total"] == 1
    err = stop(agent)
    [kept] = list(refused_dir.iterdir())
    aside = chunk_rows([kept.read_bytes()])
    [event] = [e for e in log_events(err) if e["event"] == "chunk_refused"]
    assert (event["attempts"], event["rows"], event["seq"]) == (2, len(aside), 1)
    uris, rows = delivered(moto, sentinel)
    assert aside and not set(aside) & set(rows)  # kept aside, never delivered as well
    assert float(aside[-1].split(",")[0]) < float(rows[0].split(",")[0])  # in order
    assert json.loads((spool / "state.json").read_text())["rows_refused"] == len(aside)
    [run] = sentinel.runs.values()
    [finish] = run.finishes
    assert finish["data_uris"] == uris  # 000001 onward: the names stay 1..seq


def test_sentinel_503_at_register_delays_uploads_not_sampling(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    sentinel.unavailable_until = time.monotonic() + 4
    spool = tmp_path / "spool"
    agent = start_agent(args(spool, workload.pid), sentinel_env(sentinel, proxy))
    wait_for_rows(spool, 10, timeout=5)  # sampling runs while the API refuses
    assert sentinel.registrations() == 0
    wait_until(lambda: sentinel.registrations() == 1, 30, "registration after the outage")
    wait_for_rows(spool, 40)
    err = stop(agent)
    outage = [e["event"] for e in log_events(err) if e["event"].startswith("delivery_")]
    assert outage == ["delivery_failing", "delivery_recovered"]  # one pair, from the worker
    assert sum(1 for path, status in sentinel.requests if status == 503) >= 2
    _uris, rows = delivered(moto, sentinel)
    assert rows == spool_rows(spool)


def test_sigkill_and_restart_resumes_the_same_run(tmp_path: Path, moto, proxy, sentinel, workload):
    spool = tmp_path / "spool"
    env = sentinel_env(sentinel, proxy)
    first = start_agent(args(spool, workload.pid), env)
    wait_until(lambda: len(moto.objects(sentinel.bucket)) >= 2, 20, "first uploads")
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=10)
    before = len(moto.objects(sentinel.bucket))
    second = start_agent(args(spool, workload.pid), env)
    wait_until(lambda: len(moto.objects(sentinel.bucket)) > before + 1, 20, "uploads after restart")
    err = stop(second)
    assert "run_resumed_on_api" in err
    assert sentinel.registrations() == 1
    [run] = sentinel.runs.values()
    assert run.refreshes >= 1 and len(run.finishes) == 1
    uris, rows = delivered(moto, sentinel)
    assert rows == spool_rows(spool)
    assert run.finishes[0]["data_uris"] == uris


def test_wrong_token_keeps_sampling_and_reports_not_ready(
    tmp_path: Path, proxy, sentinel, workload
):
    port = free_port()
    env = {**sentinel_env(sentinel, proxy), "SENTINEL_API_TOKEN": "wrong"}
    spool = tmp_path / "spool"
    agent = start_agent(args(spool, workload.pid, "--health-port", str(port)), env)
    wait_for_rows(spool, 10)
    ready = requests.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
    alive = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    err = stop(agent)
    assert (ready.status_code, alive.status_code) == (503, 200)
    [refused] = [e for e in log_events(err) if e["event"] == "delivery_failing"]  # one line
    assert refused["kind"] == "rejected" and "HTTP 401" in refused["error"]
    assert refused["level"] == "error" and "run_not_registered" in err
    assert sum(1 for path, status in sentinel.requests if status == 401) >= 2
    assert not sentinel.runs
    assert len(spool_rows(spool)) >= 10


def test_rotated_token_file_is_read_again_after_401(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    token_file = tmp_path / "token"
    token_file.write_text("old-token\n")
    env = {**sentinel_env(sentinel, proxy), "SENTINEL_API_TOKEN_FILE": str(token_file)}
    del env["SENTINEL_API_TOKEN"]
    spool = tmp_path / "spool"
    agent = start_agent(args(spool, workload.pid), env)
    wait_until(lambda: any(status == 401 for _path, status in sentinel.requests), 20, "a 401")
    rotated = tmp_path / "token.new"
    rotated.write_text(sentinel.token + "\n")
    rotated.replace(token_file)  # atomic, as the kubelet swaps a Secret volume's files
    wait_until(lambda: sentinel.registrations() == 1, 30, "registration with the new token")
    # Stopped before its first upload the run would go inline; let it upload once.
    wait_until(lambda: bool(moto.objects(sentinel.bucket)), 30, "an upload with the new token")
    stop(agent)
    _uris, rows = delivered(moto, sentinel)
    assert rows == spool_rows(spool)


def test_short_run_without_uploads_finishes_inline(tmp_path: Path, moto, proxy, sentinel, workload):
    spool = tmp_path / "spool"
    agent = start_agent(
        args(spool, workload.pid, "--upload-interval", "600"), sentinel_env(sentinel, proxy)
    )
    wait_until(lambda: sentinel.registrations() == 1, 20, "registration")
    wait_for_rows(spool, 5)
    stop(agent)
    [run] = sentinel.runs.values()
    [finish] = run.finishes
    assert finish["data_source"] == "inline"
    assert finish["data_csv"] == SENTINEL_HEADER + "\n" + "".join(spool_rows(spool))
    assert moto.objects(sentinel.bucket) == {}


def test_extended_schema_tags_and_pod_uid_reach_sentinel_as_it_takes_them(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    spool = tmp_path / "spool"
    env = {**sentinel_env(sentinel, proxy), "TRACKER_TAGS": "team=ml,stage=train",
           "POD_UID": "5a1d-uid", "TRACKER_SCHEMA": "extended"}  # fmt: skip
    agent = start_agent(args(spool, workload.pid, "--upload-interval", "600"), env)
    wait_until(lambda: sentinel.registrations() == 1, 20, "registration")
    wait_for_rows(spool, 5)
    err = stop(agent)
    [run] = sentinel.runs.values()
    assert run.body["tags"] == {"team": "ml", "stage": "train"}
    assert run.body["external_run_id"] == "5a1d-uid"
    [finish] = run.finishes  # the server checked the header: the 32 columns
    assert finish["data_csv"].split("\n", 1)[0] == SENTINEL_HEADER
    assert "schema_not_sent" in err


def test_nothing_uploaded_and_too_large_for_inline_keeps_the_run_open(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    proxy.down = True  # S3 unreachable for the whole run
    spool = tmp_path / "spool"
    agent = start_agent(
        args(spool, workload.pid, "--inline-max-bytes", "200", "--shutdown-timeout", "4"),
        sentinel_env(sentinel, proxy),
    )
    wait_until(lambda: sentinel.registrations() == 1, 20, "registration")
    wait_for_rows(spool, 5)
    err = stop(agent)
    [run] = sentinel.runs.values()
    assert run.finishes == []  # never `data_uris: []`: that would close the run empty
    events = log_events(err)
    [kept] = [event for event in events if event["event"] == "run_not_finished"]
    assert kept["rows_in_spool"] == len(spool_rows(spool)) > 0
    assert not json.loads((spool / "state.json").read_text())["finished"]


def test_data_the_service_could_not_ingest_is_an_error_and_a_metric(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    sentinel.processing_error = "row 3: timestamp is not a number"
    spool = tmp_path / "spool"
    agent = start_agent(
        args(spool, workload.pid, "--upload-interval", "600"), sentinel_env(sentinel, proxy)
    )
    wait_until(lambda: sentinel.registrations() == 1, 20, "registration")
    wait_for_rows(spool, 5)
    err = stop(agent)
    events = log_events(err)
    [failed] = [event for event in events if event["event"] == "run_data_not_ingested"]
    assert failed["level"] == "error" and failed["error"] == sentinel.processing_error


def test_an_unusable_register_answer_is_not_retried_within_seconds(
    tmp_path: Path, moto, proxy, sentinel, workload
):
    # Each retry of a register may leave a run behind: 5 orphan runs in 10 s were seen.
    sentinel.register_answer = {"run_id": "r1", "upload_uri_prefix": "s3://b/p",
                                "upload_credentials": None}  # fmt: skip
    spool = tmp_path / "spool"
    agent = start_agent(
        args(spool, workload.pid, "--upload-interval", "0.5"), sentinel_env(sentinel, proxy)
    )
    wait_until(lambda: sentinel.registrations() >= 1, 20, "registration")
    time.sleep(4)
    err = stop(agent)  # no crash: exit 0
    assert sentinel.registrations() == 1  # not again at once, nor at the stop
    assert "register_answer_rejected" in err


def test_exit_code_file_sets_failed_status(tmp_path: Path, moto, proxy, sentinel):
    spool = tmp_path / "spool"
    spool.mkdir()
    child = subprocess.Popen(["sh", "-c", f"sleep 2; echo 7 > {spool}/exit_code; exit 7"])
    agent = start_agent(args(spool, child.pid), sentinel_env(sentinel, proxy))
    child.wait(10)
    _out, err = agent.communicate(timeout=40)
    assert agent.returncode == 0, err
    [run] = sentinel.runs.values()
    [finish] = run.finishes
    assert finish["exit_code"] == 7 and finish["run_status"] == "failed"


def test_direct_s3_mode_uses_the_default_credential_chain(tmp_path: Path, moto, workload):
    bucket = moto.new_bucket()
    spool = tmp_path / "spool"
    env = {
        "TRACKER_S3_URI": f"s3://{bucket}/direct",
        "S3_ENDPOINT_URL": moto.endpoint,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": moto.user["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": moto.user["aws_secret_access_key"],
    }
    agent = start_agent(args(spool, workload.pid), env)
    wait_until(lambda: len(moto.objects(bucket)) >= 2, 20, "uploads")
    stop(agent)
    objects = moto.objects(bucket)
    summary_key = next(key for key in objects if key.endswith("/run.json"))
    summary = json.loads(objects[summary_key])
    chunks = [body for key, body in objects.items() if key.endswith(".csv.gz")]
    assert chunk_rows(chunks) == spool_rows(spool)
    assert summary["rows"] == len(spool_rows(spool)) and summary["chunks"] == len(chunks)
    # Hive-style partitions: no job here (no pod), so Hive's null
    run_prefix = summary_key.removesuffix("/run.json")
    assert re.fullmatch(
        r"direct/job=__HIVE_DEFAULT_PARTITION__/run=[\w.-]+-\d{8}T\d{6}Z", run_prefix
    )
    assert all(uri.startswith(f"s3://{bucket}/{run_prefix}/") for uri in summary["uris"])
    assert all(gzip.decompress(body) for body in chunks)


def test_direct_s3_signs_for_the_buckets_own_region(tmp_path: Path, moto, workload):
    # The pod runs in us-east-1, the bucket lives in eu-west-1: S3 refuses requests signed for
    # the wrong region (AuthorizationHeaderMalformed), so the agent asks the bucket first.
    bucket = moto.new_bucket("eu-west-1")
    proxy = S3Proxy(moto.port)
    proxy.bucket_regions[bucket] = "eu-west-1"
    try:
        spool = tmp_path / "spool"
        env = {"TRACKER_S3_URI": f"s3://{bucket}/direct", "S3_ENDPOINT_URL": proxy.endpoint,
               "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": moto.user["aws_access_key_id"],
               "AWS_SECRET_ACCESS_KEY": moto.user["aws_secret_access_key"]}  # fmt: skip
        agent = start_agent(args(spool, workload.pid), env)
        wait_until(lambda: len(moto.objects(bucket)) >= 2, 20, "uploads")
        err = stop(agent)
    finally:
        proxy.close()
    [located] = [e for e in log_events(err) if e["event"] == "s3_region"]
    assert (located["region"], located["source"]) == ("eu-west-1", "bucket")
    puts = [entry for entry in proxy.log if entry.method == "PUT"]
    assert puts and all(entry.status == 200 for entry in puts)  # signed right the first time
    chunks = [body for key, body in moto.objects(bucket).items() if key.endswith(".csv.gz")]
    assert chunk_rows(chunks) == spool_rows(spool)


def test_sentinel_credentials_without_a_region_use_the_buckets(tmp_path: Path, moto, workload):
    proxy = S3Proxy(moto.port)
    sentinel = SentinelServer(moto, proxy, moto.new_bucket("eu-west-1"))
    sentinel.credentials_region = None
    proxy.bucket_regions[sentinel.bucket] = "eu-west-1"
    try:
        spool = tmp_path / "spool"
        agent = start_agent(args(spool, workload.pid), sentinel_env(sentinel, proxy))
        wait_until(lambda: len(moto.objects(sentinel.bucket)) >= 2, 20, "uploads")
        err = stop(agent)
        uris, rows = delivered(moto, sentinel)
    finally:
        sentinel.close()
        proxy.close()
    [located] = [e for e in log_events(err) if e["event"] == "s3_region"]
    assert (located["region"], located["source"]) == ("eu-west-1", "bucket")
    assert all(entry.status == 200 for entry in proxy.log if entry.method == "PUT")
    assert rows == spool_rows(spool)
    [run] = sentinel.runs.values()
    assert run.finishes[0]["data_uris"] == uris
