"""`report` on a generated fleet of 51 runs over five jobs (tests/support/fleet.py), local and
on moto S3: the groups and every figure as computed here from the generated rows, the OOM-
killed runs raising memory, a corrupt chunk left out and flagged, a group too short to judge
refused, a run without run.json a group of its own; CSV, and the fleet's HTML page as headless
Chromium draws it."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sentinel_sidecar.identity.record import cpu_cores, memory_mib
from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from tests.support.agent import agent_env
from tests.support.fleet import FleetRun, generate, write_local, write_s3
from tests.support.page import series_pixels
from tests.support.peers import REGION

FLEET = generate()


def report(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentinel_sidecar", "report", *args],
                          capture_output=True, text=True, timeout=300,
                          env=agent_env(env))  # fmt: skip


def s3_env(moto: Any, proxy: Any) -> dict[str, str]:
    """`report`'s environment for the moto fleet, through the S3 proxy."""
    return {"AWS_ENDPOINT_URL_S3": proxy.endpoint, "AWS_REGION": REGION,
            "AWS_ACCESS_KEY_ID": moto.user["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": moto.user["aws_secret_access_key"]}  # fmt: skip


def expected(runs: list[FleetRun], source_of: Any) -> dict[str, dict[str, Any]]:
    """Per group, from the generated rows: the VPA-style rules (p95 nearest rank, peak x 1.15,
    x 1.2 and at least +100 MiB after an OOM kill, 10m and 16Mi steps), or a refusal."""
    groups: dict[str, list[FleetRun]] = {}
    for run in runs:
        groups.setdefault(f"job={run.job}" if run.job else f"run={source_of(run)}", []).append(run)
    answers: dict[str, dict[str, Any]] = {}
    for key, members in groups.items():
        rows = [row for run in members for row in run.counted]
        samples = sum(1 for _t, cpu, memory in rows if cpu > 0 or memory > 0)
        if samples < 5:
            answers[key] = {"refused": True}
            continue
        cpu = sorted(value for _t, value, _m in rows)
        basis = cpu[max(1, math.ceil(0.95 * len(cpu))) - 1]
        peak = max(memory for _t, _c, memory in rows)
        oom = sum(run.oom_killed for run in members)
        needed = max(peak * 1.2, peak + 100) if oom else peak
        hours = sum((run.counted[-1][0] - run.counted[0][0]) / 3600 for run in members)
        millicores = max(10, math.ceil(round(max(basis, 0.01) * 1000, 6) / 10) * 10)
        mib = max(16, math.ceil(round(needed * 1.15, 6) / 16) * 16)
        requests = members[-1].requests
        difference = None
        if requests:
            difference = {
                "core_hours": round((cpu_cores(requests["cpu"]) - millicores / 1000) * hours, 3),
                "gib_hours": round((memory_mib(requests["memory"]) - mib) / 1024 * hours, 3),
            }
        answers[key] = {"runs": len(members), "rows": len(rows), "basis": basis, "peak": peak,
                        "oom": oom, "hours": hours, "cpu": millicores / 1000, "memory": mib,
                        "difference": difference}  # fmt: skip
    return answers


def check(groups: list[dict[str, Any]], answers: dict[str, dict[str, Any]]) -> None:
    """`report --format json`'s groups against the answers computed here."""
    assert {group["group"] for group in groups} == set(answers)
    for group in groups:
        want = answers[group["group"]]
        if want.get("refused"):
            assert "too little to recommend from" in group["refused"], group
            continue
        basis, requests = group["basis"], group["resources"]["requests"]
        assert (basis["runs"], basis["rows"], basis["oom_killed_runs"]) == (
            want["runs"], want["rows"], want["oom"]), group["group"]  # fmt: skip
        assert basis["cpu_percentile_cores"] == round(want["basis"], 4)
        assert basis["memory_peak_mib"] == round(want["peak"], 1)
        assert basis["hours"] == round(want["hours"], 3)
        assert cpu_cores(requests["cpu"]) == want["cpu"]
        assert memory_mib(requests["memory"]) == want["memory"], group["group"]
        assert group["difference"] == want["difference"]


def test_a_local_fleet_is_grouped_and_figured_as_computed_here(tmp_path: Path):
    fleet = tmp_path / "fleet"
    write_local(FLEET, fleet)
    result = report(str(fleet), "--format", "json")
    assert result.returncode == 0, result.stderr
    groups = json.loads(result.stdout)["groups"]
    check(groups, expected(FLEET, lambda run: str(fleet / run.key)))
    [train] = [group for group in groups if group["group"] == "job=train"]
    first = next(run for run in FLEET if run.pod == "train-00")
    [shown] = [run for run in train["runs"] if run["source"] == str(fleet / first.key)]
    mean_cpu = sum(cpu for _t, cpu, _m in first.rows) / len(first.rows)  # 1 s rows
    assert shown["rows"] == len(first.rows) and shown["hours"] == round(299 / 3600, 3)
    assert shown["memory_peak_mib"] == max(memory for _t, _c, memory in first.rows)
    assert shown["core_hours_used"] == round(mean_cpu * len(first.rows) / 3600, 3)
    flags = {group["group"]: group["flags"] for group in groups}
    assert flags["job=train"][0].startswith("oom: 2 of 14 run(s) ended OOM-killed")
    assert flags["job=infer"][0].startswith("oom: 1 of 10 run(s)")
    [unreadable] = [flag for flag in flags["job=etl"] if flag.startswith("unreadable")]
    assert "1 chunk(s) left out" in unreadable and "etl-05" in unreadable
    assert "left out" in result.stderr and "000002.csv.gz" in result.stderr
    loose = f"run={fleet / FLEET[-1].key}"
    assert any(flag.startswith("few runs: 1") for flag in flags[loose])
    table = report(str(fleet), "--price-core-hour", "0.04", "--price-gib-hour", "0.005")
    assert table.returncode == 0, table.stderr
    print(table.stdout[: table.stdout.index("\n\n")])  # the fleet's lines, for the record
    fleet_lines = table.stdout.splitlines()[1:7]
    assert re.match(r" +14 .* 8 -> \d+m +8Gi -> \d+Mi +\+\d.* job=train \*$", fleet_lines[0])
    assert fleet_lines[-1].endswith("too little to recommend from  job=tiny")
    rows = list(csv.DictReader(io.StringIO(report(str(fleet), "--format", "csv").stdout)))
    assert len(rows) == 6 and {row["group"] for row in rows} == {g["group"] for g in groups}
    train = next(row for row in rows if row["group"] == "job=train")
    assert (train["runs"], train["oom_killed_runs"], train["cpu_request_current"]) == (
        "14",
        "2",
        "8",
    )


def test_a_fleet_in_s3_reads_as_the_same_fleet_from_one_listing(tmp_path: Path, moto, proxy):
    bucket = moto.new_bucket()
    write_s3(FLEET, moto.client("s3"), bucket, "fleet")
    result = report(f"s3://{bucket}/fleet", "--format", "json", env=s3_env(moto, proxy))
    assert result.returncode == 0, result.stderr
    check(json.loads(result.stdout)["groups"],
          expected(FLEET, lambda run: f"s3://{bucket}/fleet/{run.key}"))  # fmt: skip
    assert f"s3://{bucket}/fleet/{FLEET[0].key}/000001.csv.gz" not in result.stderr
    listings = [entry for entry in proxy.log if "list-type=2" in entry.path]
    assert len(listings) == 1, [entry.path for entry in listings]  # not one more per run


@pytest.mark.parametrize("hang_only", [None, ".csv.gz"], ids=["listing", "chunks"])
def test_an_s3_that_stops_answering_ends_the_report_in_bounded_time_naming_it(
    moto, proxy, hang_only: str | None
):
    """A black hole at the listing, or only at the chunks once listed: exit 2 after the
    timeout's few attempts, one line naming S3 and the timeout; not minutes per chunk."""
    bucket = moto.new_bucket()
    write_s3(FLEET[:2], moto.client("s3"), bucket, "fleet")
    proxy.hang, proxy.hang_only = "blackhole", hang_only
    started = time.monotonic()
    result = report(f"s3://{bucket}/fleet", "--s3-timeout", "1", env=s3_env(moto, proxy))
    took = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]
    assert "S3 did not answer" in line and "--s3-timeout" in line, line
    assert took < 30, took  # three attempts of 1 s each, per request, then the end


def test_a_fleet_page_has_a_section_per_group_the_most_wasted_first(tmp_path: Path):
    fleet = tmp_path / "fleet"
    write_local(FLEET, fleet)
    page = tmp_path / "fleet.html"
    result = report(str(fleet), "--html", str(page), "--since", "2026-11-05",
                    "--price-core-hour", "0.04")  # fmt: skip
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    order = re.findall(r'<section class="group"><header><h2>([^<]+)</h2>', text)
    answers = expected([run for run in FLEET if run.started.day >= 5 and run.job], str)
    wasted = sorted((key for key in answers if not answers[key].get("refused")),
                    key=lambda key: -answers[key]["difference"]["core_hours"])  # fmt: skip
    assert order[: len(wasted)] == wasted  # then the groups without a recommendation
    assert "<h1>" in text and "money" in text and text.count("<svg") >= 3 * len(wasted)
    assert not re.search(r"<script|<link|<img|@import", text, re.IGNORECASE)
    blue, orange = series_pixels(page, tmp_path / "shot.png", height=6000)
    assert blue > 5000 and orange > 2000


@pytest.mark.parametrize(
    ("args", "expected_error"),
    [(["--price-core-hour", "-1"], "--price-core-hour: -1 is not a price >= 0"),
     (["--format", "parquet"], "invalid choice: 'parquet'"),
     (["--s3-timeout", "0"], "--s3-timeout: 0 is not a number of seconds >= 1")],
)  # fmt: skip
def test_bad_fleet_input_exits_2_naming_what_was_expected(
    tmp_path: Path, args: list[str], expected_error: str
):
    write_local(FLEET[:3], tmp_path / "fleet")
    result = report(str(tmp_path / "fleet"), *args)
    assert result.returncode == 2 and expected_error in result.stderr


def documented_sql(label: str) -> str:
    """The SQL block docs/fleet.md marks `<!-- sql: label -->`."""
    text = (Path(__file__).parents[2] / "docs" / "fleet.md").read_text()
    block = text[text.index(f"<!-- sql: {label} -->") :]
    start = block.index("```sql\n") + len("```sql\n")
    return block[start : block.index("\n```", start)]


def test_the_documented_duckdb_query_agrees_with_report(tmp_path: Path, monkeypatch):
    import duckdb

    fleet = tmp_path / "fleet"
    write_local(FLEET, fleet)
    corrupt = next(run for run in FLEET if run.corrupt_chunk)
    (fleet / corrupt.key / f"{corrupt.corrupt_chunk:06d}.csv.gz").unlink()  # DuckDB would stop
    result = report(str(fleet), "--format", "json")
    assert result.returncode == 0, result.stderr
    groups = {group["group"]: group for group in json.loads(result.stdout)["groups"]}
    monkeypatch.chdir(tmp_path)  # the view reads 'fleet/job=*/run=*/*.csv.gz'
    db = duckdb.connect()
    db.execute(documented_sql("duckdb"))
    answer = db.execute(documented_sql("query")).fetchall()
    compared = 0
    for job, runs, rows, hours, peak, cpu_p95 in answer:
        group = groups.get(f"job={job}")
        if group is None or "refused" in group:
            continue
        basis = group["basis"]
        assert (runs, rows) == (basis["runs"], basis["rows"]), job
        assert round(hours, 3) == basis["hours"] and round(peak, 1) == basis["memory_peak_mib"]
        assert round(cpu_p95, 4) == basis["cpu_percentile_cores"], job
        compared += 1
    assert compared == 4  # train, etl, infer, backfill (tiny: too little; the loose run: no job)
    for label in ("athena-ddl", "trino-ddl"):  # the same 32 columns as the agent writes
        names = re.findall(r"[`\"]?(\w+)[`\"]? double", documented_sql(label))
        assert tuple(names) == SENTINEL_COLUMNS, label
