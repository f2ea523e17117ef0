"""Direct-S3 mode and `report` against a second S3 implementation, s3rver (npm; `.ci/run`
installs it and sets S3RVER): no `x-amz-bucket-region` on HeadBucket, its own listing, its
keys checked. The agent writes a run in Hive-style partitions; `report` reads it back."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from tests.support.agent import (
    agent_env,
    chunk_rows,
    log_events,
    run_args,
    sigterm,
    spool_rows,
    start_agent,
    wait_until,
)
from tests.support.peers import REGION, S3rver
from tests.support.tools import missing


@pytest.fixture
def s3rver(tmp_path: Path) -> Iterator[S3rver]:
    binary = os.environ.get("S3RVER")
    if not binary or not Path(binary).exists():
        missing("s3rver is not installed (set S3RVER; .ci/run installs it with npm)")
    server = S3rver(str(binary), tmp_path / "s3rver")
    yield server
    server.close()


def test_a_direct_s3_run_on_s3rver_is_written_in_partitions_and_read_back(
    tmp_path: Path, s3rver: S3rver, workload
):
    s3 = s3rver.client()
    s3.create_bucket(Bucket="runs")
    spool = tmp_path / "spool"
    env = {"TRACKER_S3_URI": "s3://runs/fleet", "S3_ENDPOINT_URL": s3rver.endpoint,
           "TRACKER_JOB_NAME": "nightly train", "AWS_ACCESS_KEY_ID": "S3RVER",
           "AWS_SECRET_ACCESS_KEY": "S3RVER"}  # fmt: skip
    agent = start_agent(run_args(spool, "--interval", "0.1", "--upload-interval", "0.5",
                                 "--pid", str(workload.pid)), env)  # fmt: skip
    wait_until(lambda: len(s3rver.objects("runs")) >= 2, 20, "uploads to s3rver")
    _elapsed, err = sigterm(agent)
    objects = s3rver.objects("runs")
    [summary_key] = [key for key in objects if key.endswith("/run.json")]
    run_prefix = summary_key.removesuffix("/run.json")
    assert re.fullmatch(r"fleet/job=nightly%20train/run=[\w.-]+-\d{8}T\d{6}Z", run_prefix)
    chunks = [body for key, body in objects.items() if key.endswith(".csv.gz")]
    assert chunk_rows(chunks) == spool_rows(spool)  # every row, once, in order
    [located] = [e for e in log_events(err) if e["event"] == "s3_region"]
    assert located["source"] == "settings"  # s3rver names no region: signed for us-east-1
    read_env = {"AWS_ENDPOINT_URL_S3": s3rver.endpoint, "AWS_REGION": REGION,
                "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                # botocore's own switches, for stores that refuse its checksums (documented)
                "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "sentinel_sidecar", "report", f"s3://runs/{run_prefix}",
         "--format", "json"],
        capture_output=True, text=True, timeout=120, env=agent_env(read_env),
    )  # fmt: skip
    assert result.returncode in (0, 3), result.stderr  # 3: too short a run to recommend from
    if result.returncode == 0:
        data = json.loads(result.stdout)
        assert data["basis"]["rows"] == len(spool_rows(spool))
    print(f"s3rver: {len(chunks)} chunks under {run_prefix}, report exit {result.returncode}")


def test_many_runs_under_a_prefix_are_found_by_their_run_json_and_grouped_by_job(
    s3rver: S3rver,
):
    s3 = s3rver.client()
    s3.create_bucket(Bucket="fleet")
    header = ",".join(SENTINEL_COLUMNS) + "\n"
    for job, run, cpu in (("train", "p-1", 0.5), ("train", "p-2", 0.7), ("etl", "p-3", 0.2)):
        prefix = f"runs/job={job}/run={run}"
        cells = dict.fromkeys(SENTINEL_COLUMNS, "0")
        rows = [",".join({**cells, "timestamp": str(1_700_000_000 + i), "process_cpu_usage":
                          str(cpu), "process_memory_mib": "300"}[c] for c in SENTINEL_COLUMNS)
                for i in range(30)]  # fmt: skip
        body = gzip.compress((header + "\n".join(rows) + "\n").encode())
        s3.put_object(Bucket="fleet", Key=f"{prefix}/000001.csv.gz", Body=body)
        summary = {"run_id": run, "identity": {"job_name": {"value": job, "source": "pod"}}}
        s3.put_object(Bucket="fleet", Key=f"{prefix}/run.json", Body=json.dumps(summary).encode())
    env = {"AWS_ENDPOINT_URL_S3": s3rver.endpoint, "AWS_REGION": REGION,
           "AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "sentinel_sidecar", "report", "s3://fleet/runs", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=agent_env(env),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)["groups"]
    runs = {group["group"]: group["basis"]["runs"] for group in answer}
    assert runs == {"job=etl": 1, "job=train": 2}
