"""Direct-S3 mode and `report` against a second S3 implementation, s3rver (npm; `.ci/run`
installs it and sets S3RVER): no `x-amz-bucket-region` on HeadBucket, its own listing, its
keys checked. The agent writes a run in Hive-style partitions; `report` reads it back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
