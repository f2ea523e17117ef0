"""Run the real CLI as a subprocess and read what it delivered."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from sentinel_sidecar.measure.rows import Schema, header_line
from tests.support.peers import REGION, MotoServer, S3Proxy, SentinelServer


def agent_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without our settings, plus `env`. Cloud detection is off: tests talk
    to 127.0.0.1 only, never to the link-local metadata address (tests of the probe point
    TRACKER_CLOUD_METADATA_URL at their own loopback server)."""
    ours = ("TRACKER_", "SENTINEL_", "AWS_", "S3_")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    environment["TRACKER_CLOUD_DETECT"] = "false"
    environment.update(env or {})
    return environment


def start_agent(
    args: list[str], env: dict[str, str] | None = None, **popen: Any
) -> subprocess.Popen[str]:
    """The real CLI with `args`, its output piped as text unless `popen` says otherwise."""
    options: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen}
    return subprocess.Popen(
        [sys.executable, "-m", "sentinel_sidecar", *args], env=agent_env(env), text=True, **options
    )


def run_args(spool: Path, *flags: str, output: Path | None = None) -> list[str]:
    """`run` on `spool` (and `output` in local mode) with the health port off; `flags` after,
    so they win (a test's `--health-port PORT` too)."""
    where = ["--output-dir", str(output)] if output is not None else []
    return ["run", "--spool-dir", str(spool), *where, "--health-port", "0", *flags]


def sigterm(agent: subprocess.Popen[str], timeout: float = 60.0) -> tuple[float, str]:
    """SIGTERM, then the seconds until the agent exited and its log; asserts exit 0 within
    `timeout` (killed and failed after it)."""
    started = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    try:
        _out, err = agent.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        _out, err = agent.communicate()
        raise AssertionError(f"alive {timeout:.0f} s after SIGTERM:\n{err[-3000:]}") from None
    elapsed = time.monotonic() - started
    assert agent.returncode == 0, err[-3000:]
    return elapsed, err


def log_events(text: str) -> list[dict[str, Any]]:
    """The agent's JSON log lines (stderr or a log file) as dicts, other lines left out."""
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def wait_for_rows(spool: Path, rows: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(spool_rows(spool, check_header=False)) > rows:
            return
        time.sleep(0.05)
    raise AssertionError(f"fewer than {rows} rows in the segments of {spool} after {timeout} s")


def segments(spool: Path) -> list[Path]:
    """The spool's segment files in the order of the run."""
    return sorted(spool.glob("segment-*.csv"))


def spool_rows(spool: Path, *, check_header: bool = True) -> list[str]:
    """Rows of every segment left in the spool, in order (each segment starts with the header,
    but the newest may be empty: its header comes with its first row)."""
    rows: list[str] = []
    for path in segments(spool):
        lines = path.read_text().splitlines(keepends=True)
        if check_header and lines:
            assert lines[0] == header_line(Schema.SENTINEL), path
        rows += lines[1:]
    return rows


def chunk_rows(bodies: list[bytes]) -> list[str]:
    """Rows of gzipped chunks in order; each must be valid gzip starting with the header."""
    rows: list[str] = []
    for body in bodies:
        lines = gzip.decompress(body).decode().splitlines(keepends=True)
        assert lines[0] == header_line(Schema.SENTINEL)
        assert all(line.endswith("\n") for line in lines)
        rows.extend(lines[1:])
    return rows


def dir_chunks(output: Path) -> list[bytes]:
    paths = sorted(output.glob("*.csv.gz"))
    assert [p.name for p in paths] == [f"{i:06d}.csv.gz" for i in range(1, len(paths) + 1)]
    return [p.read_bytes() for p in paths]


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def health_answers(port: int) -> bool:
    """True once the agent's health server answers on `port` (any status)."""
    try:
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
    except requests.ConnectionError:
        return False
    return True


def scrape(port: int) -> dict[str, float]:
    """The agent's /metrics as {series: value}; a series with labels as `name{k="v",...}`
    (labels sorted), parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def sentinel_env(sentinel: SentinelServer, proxy: S3Proxy) -> dict[str, str]:
    return {
        "SENTINEL_API_URL": sentinel.url,
        "SENTINEL_API_TOKEN": sentinel.token,
        "S3_ENDPOINT_URL": proxy.endpoint,
        "AWS_REGION": REGION,
        "TRACKER_PROJECT_NAME": "e2e",
        "TRACKER_COMMAND": "python train.py --epochs 3",
        "NODE_NAME": "node-a",
        "POD_NAME": "job-abc",
    }


def delivered(moto: MotoServer, sentinel: SentinelServer) -> tuple[list[str], list[str]]:
    """URIs and rows of every chunk object of the one run, in key order."""
    [run] = sentinel.runs.values()
    prefix = run.prefix.removeprefix(f"s3://{sentinel.bucket}/") + "/"
    objects = moto.objects(sentinel.bucket, prefix)
    names = [key.removeprefix(prefix) for key in objects]
    assert names == [f"{i:06d}.csv.gz" for i in range(1, len(names) + 1)]
    uris = [f"s3://{sentinel.bucket}/{key}" for key in objects]
    return uris, chunk_rows(list(objects.values()))
