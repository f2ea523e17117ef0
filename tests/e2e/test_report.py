"""`report`: recommendations on crafted runs, Kubernetes quantities, every input kind (output
dir, spool dir, direct-S3 prefix on moto), and the HTML page — self-contained, every chart
with its series, and not blank when headless Chromium draws it."""

from __future__ import annotations

import gzip
import json
import math
import re
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sentinel_sidecar.identity.record import cpu_cores, memory_mib
from sentinel_sidecar.measure.rows import SENTINEL_COLUMNS
from sentinel_sidecar.report.recommend import (
    Prices,
    Rules,
    Usage,
    cpu_quantity,
    memory_quantity,
    percentile,
    recommend,
)
from sentinel_sidecar.spool.segment import segment_name
from tests.support.agent import agent_env
from tests.support.page import series_pixels
from tests.support.peers import REGION

HEADER = ",".join(SENTINEL_COLUMNS) + "\n"


def row(t: float, cpu: float, memory: float, gpu: float = 0.0) -> str:
    cells = dict.fromkeys(SENTINEL_COLUMNS, "0")
    cells |= {"timestamp": f"{t:.3f}", "process_cpu_usage": f"{cpu:.4f}",
              "process_memory_mib": f"{memory:.3f}", "process_disk_read_bytes": "4096",
              "process_disk_write_bytes": "8192", "system_net_recv_bytes": "1500",
              "system_net_sent_bytes": "900", "process_gpu_usage": f"{gpu:.4f}",
              "process_gpu_utilized": str(int(gpu > 0))}  # fmt: skip
    return ",".join(cells[column] for column in SENTINEL_COLUMNS) + "\n"


def output_dir(directory: Path, rows: list[str], summary: dict | None = None,
               per_chunk: int = 500) -> Path:  # fmt: skip
    """A local output directory as the agent writes it."""
    directory.mkdir(parents=True)
    for seq, start in enumerate(range(0, len(rows), per_chunk), start=1):
        body = HEADER + "".join(rows[start : start + per_chunk])
        (directory / f"{seq:06d}.csv.gz").write_bytes(gzip.compress(body.encode()))
    if summary is not None:
        (directory / "run.json").write_text(json.dumps(summary))
    return directory


@dataclass
class Sampled:
    """One run's rows, as lists, for the pure recommendation."""

    cpu: list[float]
    memory: list[float]
    hours: float = 1.0
    oom_killed: bool = False


def usage(*runs: Sampled, percent: float = 95.0) -> Usage:
    """What the engine hands `recommend` for these runs, computed here from the lists."""
    cpu = sorted(value for run in runs for value in run.cpu)
    return Usage(
        cpu_basis=cpu[max(1, math.ceil(percent / 100 * len(cpu))) - 1],
        memory_peak_mib=max(value for run in runs for value in run.memory),
        gpus_peak=0.0,
        runs=len(runs),
        rows=len(cpu),
        hours=sum(run.hours for run in runs),
        oom_runs=sum(run.oom_killed for run in runs),
    )


def test_a_flat_run():
    rec = recommend(usage(Sampled([0.5] * 100, [700.0] * 100)))
    assert (rec.cpu_request, rec.cpu_limit, rec.memory, rec.gpus) == ("500m", None, "816Mi", 0)
    assert rec.resources() == {"requests": {"cpu": "500m", "memory": "816Mi"},
                               "limits": {"memory": "816Mi"}}  # fmt: skip


def test_the_percentile_of_counted_values_is_the_nearest_rank():
    values = [0.1] * 97 + [4.0] * 3
    counts = sorted(Counter(values).items())
    assert percentile(counts, 95) == 0.1 and percentile(counts, 99) == 4.0
    assert percentile(counts, 97) == 0.1 and percentile(counts, 97.01) == 4.0
    assert percentile([], 95) == 0.0 and percentile([(2.5, 1)], 1) == 2.5


def test_a_spiky_run_requests_its_percentile_and_keeps_its_peak_memory():
    spiky = Sampled([0.1] * 97 + [4.0] * 3, [300.0] * 99 + [1500.0])  # rare spikes
    rec = recommend(usage(spiky))
    assert rec.cpu_request == "100m" and rec.cpu_basis == 0.1
    assert rec.memory == "1728Mi"  # 1500 x 1.15 = 1725, up to 16 Mi
    assert recommend(usage(spiky, percent=99), Rules(cpu_percentile=99)).cpu_request == "4"


def test_growing_memory_is_sized_for_its_end():
    memory = [100.0 + 9 * i for i in range(101)]  # 100 -> 1000 MiB
    rec = recommend(usage(Sampled([0.2] * 101, memory)), Rules(memory_margin=0.0))
    assert rec.memory == "1008Mi" and rec.memory_peak_mib == 1000


def test_several_runs_make_one_recommendation():
    runs = usage(Sampled([0.2] * 50, [500.0] * 50, 0.5), Sampled([0.9] * 50, [800.0] * 50, 1.5))
    rec = recommend(runs, Rules(cpu_limit_factor=2), {"requests": {"cpu": "2", "memory": "2Gi"}})
    assert (rec.runs, rec.rows, rec.hours) == (2, 100, 2.0)
    assert rec.cpu_request == "900m" and rec.cpu_limit == "1800m" and rec.memory == "928Mi"
    assert rec.savings() == {"core_hours": 2.2, "gib_hours": round((2048 - 928) / 1024 * 2, 3)}
    priced = rec.savings(Prices(core_hour=0.04, gib_hour=0.005))
    assert priced == {"core_hours": 2.2, "gib_hours": 2.188,
                      "money": round(2.2 * 0.04 + 2.188 * 0.005, 2)}  # fmt: skip


def test_a_run_that_ended_oom_killed_raises_memory_as_the_vpa_does_and_is_flagged():
    killed = Sampled([0.5] * 100, [1000.0] * 100, oom_killed=True)
    rec = recommend(usage(killed, Sampled([0.5] * 100, [900.0] * 100),
                          Sampled([0.5] * 10, [800.0] * 10)))  # fmt: skip
    assert rec.memory == "1392Mi"  # max(1000 x 1.2, 1000 + 100) x 1.15 = 1380, up to 16 Mi
    assert rec.oom_runs == 1 and rec.flags[0].startswith("oom: 1 of 3 run(s)")
    small = Sampled([0.1] * 10, [200.0] * 10, oom_killed=True)
    rec = recommend(usage(small, small, small), Rules(memory_margin=0.0))
    assert rec.memory == "304Mi"  # the +100 MiB minimum wins over x 1.2 for a small peak
    fine = Sampled([0.5] * 10, [1000.0] * 10)
    assert recommend(usage(fine, fine, fine)).memory == "1152Mi"  # no OOM


def test_floors_and_too_few_runs():
    rec = recommend(usage(Sampled([0.01] * 10, [50.0] * 10)),
                    Rules(min_cpu_cores=0.25, min_memory_mib=512, min_runs=2))  # fmt: skip
    assert (rec.cpu_request, rec.memory) == ("250m", "512Mi")
    assert rec.flags == ("few runs: 1 (fewer than 2); repeated runs of the job make a firmer "
                         "recommendation",)  # fmt: skip
    two = Sampled([0.5] * 10, [100.0] * 10)
    assert recommend(usage(two, two), Rules(min_runs=2)).flags == ()


def test_report_reads_an_oom_kill_from_the_exit_code_and_from_the_cgroup(tmp_path: Path):
    rows = [row(1_700_000_000 + i, 0.4, 600.0) for i in range(60)]
    killed = output_dir(tmp_path / "killed", rows, {"run_id": "k", "exit_code": 137})
    fine = output_dir(tmp_path / "fine", rows, {"run_id": "f", "exit_code": 0})
    extended = tmp_path / "extended"
    extended.mkdir()
    header = HEADER.rstrip("\n") + ",cgroup_oom_kills\n"
    body = header + "".join(r.rstrip("\n") + (",1\n" if i == 59 else ",0\n")
                            for i, r in enumerate(rows))  # fmt: skip
    (extended / "000001.csv.gz").write_bytes(gzip.compress(body.encode()))
    result = report(str(killed), str(fine), str(extended), "--format", "json",
                    "--group-by", "all")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [run["oom_killed"] for run in data["runs"]] == [True, False, True]
    assert data["basis"]["oom_killed_runs"] == 2
    assert data["resources"]["requests"]["memory"] == "832Mi"  # 600 x 1.2 x 1.15 = 828
    assert data["flags"][0].startswith("oom: 2 of 3 run(s)")
    table = report(str(killed)).stdout
    assert "raised for OOM kills" in table and "flag: oom: 1 of 1" in table
    assert "flag: few runs: 1" in table


def fleet_run(directory: Path, job: str | None, started: str, cpu: float, memory: float) -> Path:
    """One run as the agent leaves it in an output directory, with its job and start time."""
    identity = {"job_name": {"value": job, "source": "pod"}} if job else {}
    first = datetime.fromisoformat(started).timestamp()
    rows = [row(first + i, cpu, memory) for i in range(60)]
    return output_dir(directory, rows, {"run_id": directory.name, "started_at": started,
                                        "identity": identity})  # fmt: skip


def test_a_directory_of_many_runs_is_reported_per_job_within_the_time_asked(tmp_path: Path):
    fleet = tmp_path / "fleet"
    fleet_run(fleet / "a" / "train-1", "train", "2026-11-01T02:00:00+00:00", 0.5, 400.0)
    fleet_run(fleet / "a" / "train-2", "train", "2026-11-02T02:00:00+00:00", 1.5, 800.0)
    fleet_run(fleet / "b" / "etl-1", "etl", "2026-11-02T03:00:00+00:00", 0.2, 100.0)
    fleet_run(fleet / "b" / "old-train", "train", "2026-10-01T02:00:00+00:00", 9.0, 9000.0)
    fleet_run(fleet / "c" / "loose", None, "2026-11-03T00:00:00+00:00", 0.3, 50.0)
    result = report(str(fleet), "--format", "json", "--since", "2026-11-01")
    assert result.returncode == 0, result.stderr
    groups = {group["group"]: group for group in json.loads(result.stdout)["groups"]}
    assert set(groups) == {"job=train", "job=etl", f"run={fleet / 'c' / 'loose'}"}
    train = groups["job=train"]
    assert train["basis"]["runs"] == 2  # the October run left out by --since
    assert train["resources"]["requests"] == {"cpu": "1500m", "memory": "928Mi"}
    assert any(flag.startswith("few runs: 2") for flag in train["flags"])
    assert groups["job=etl"]["basis"]["runs"] == 1
    until = json.loads(report(str(fleet), "--format", "json", "--until", "2026-11-02").stdout)
    assert until["basis"]["runs"] == 2  # train-1 and the October run: one group, one answer
    table = report(str(fleet), "--since", "2026-11-01").stdout
    assert "== job=train ==" in table and "== job=etl ==" in table
    everything = json.loads(report(str(fleet), "--format", "json", "--group-by", "all").stdout)
    assert everything["basis"]["runs"] == 5


def test_a_fleet_directory_may_hold_spools_and_several_groups_share_one_html_page(
    tmp_path: Path,
):
    fleet = tmp_path / "fleet"
    fleet_run(fleet / "out-1", "train", "2026-11-01T02:00:00+00:00", 0.5, 400.0)
    spool = fleet / "pod-b" / "spool"  # a spool dir: its rows, its output's run.json
    spool.mkdir(parents=True)
    first = datetime.fromisoformat("2026-11-02T02:00:00+00:00").timestamp()
    body = HEADER + "".join(row(first + i, 0.2, 100.0) for i in range(60))
    (spool / segment_name(0, 0)).write_text(body)
    (spool / "output").mkdir()
    identity = {"job_name": {"value": "etl", "source": "pod"}}
    (spool / "output" / "run.json").write_text(json.dumps({"run_id": "b", "identity": identity}))
    result = report(str(fleet), "--format", "json")
    assert result.returncode == 0, result.stderr
    groups = {g["group"]: g for g in json.loads(result.stdout)["groups"]}
    assert set(groups) == {"job=train", "job=etl"}
    assert groups["job=etl"]["runs"][0]["source"] == str(spool)
    page = report(str(fleet), "--html", str(tmp_path / "page.html"))
    assert page.returncode == 0, page.stderr
    text = (tmp_path / "page.html").read_text()
    assert "<h1>2 jobs: what they used</h1>" in text
    assert text.count('<section class="group">') == 2 and "<h2>job=etl</h2>" in text


def test_bad_fleet_flags_exit_2_naming_the_flag(tmp_path: Path):
    out = output_dir(tmp_path / "out", [row(1_700_000_000 + i, 0.4, 600.0) for i in range(10)])
    for flag, value in (("--group-by", "team"), ("--since", "last tuesday")):
        result = report(str(out), flag, value)
        assert result.returncode == 2 and flag in result.stderr
    fleet = tmp_path / "fleet"
    fleet_run(fleet / "a", "train", "2026-11-01T02:00:00+00:00", 0.5, 400.0)
    none_left = report(str(fleet), "--since", "2027-01-01")
    assert none_left.returncode == 2
    assert "none of the 1 run(s) started in the time asked" in none_left.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--oom-bump-ratio", "0.5"), ("--oom-min-bump-mib", "-1"), ("--min-cpu", "lots"),
     ("--min-memory", "-5Mi"), ("--min-runs", "0")],
)  # fmt: skip
def test_bad_recommendation_flags_exit_2_naming_the_flag(tmp_path: Path, flag: str, value: str):
    out = output_dir(tmp_path / "out", [row(1_700_000_000 + i, 0.4, 600.0) for i in range(10)])
    result = report(str(out), flag, value)
    assert result.returncode == 2 and flag in result.stderr


@pytest.mark.parametrize(
    ("cores", "quantity"),
    [(0.0, "10m"), (0.001, "10m"), (0.2501, "260m"), (0.25, "250m"), (1.0, "1"),
     (1.999, "2"), (2.5, "2500m")],
)  # fmt: skip
def test_cpu_quantities_round_up(cores: float, quantity: str):
    assert cpu_quantity(cores) == quantity
    assert cpu_cores(quantity) >= cores


@pytest.mark.parametrize(
    ("mib", "quantity"),
    [(0.0, "16Mi"), (1.0, "16Mi"), (767.0, "768Mi"), (1023.5, "1Gi"), (2048.0, "2Gi"),
     (2049.0, "2064Mi")],
)  # fmt: skip
def test_memory_quantities_round_up(mib: float, quantity: str):
    assert memory_quantity(mib) == quantity
    assert memory_mib(quantity) >= mib


def test_quantities_as_kubernetes_writes_them():
    assert memory_mib("1G") == pytest.approx(953.674, rel=1e-4)
    assert memory_mib("536870912") == 512 and memory_mib("512Ki") == 0.5


def report(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sentinel_sidecar", "report", *args],
                          capture_output=True, text=True, timeout=300,
                          env=agent_env(env))  # fmt: skip


def test_an_output_and_a_spool_and_the_current_resources(tmp_path: Path):
    rows = [row(1_700_000_000 + i, 0.4, 600.0) for i in range(3600)]
    summary = {"run_id": "r1", "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                                             "limits": {"memory": "1Gi"}}}  # fmt: skip
    out = output_dir(tmp_path / "out", rows, summary)
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "metrics.csv").write_text(HEADER + "".join(rows))
    result = report(str(out), str(spool), "--format", "json", "--group-by", "all")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["resources"] == {"requests": {"cpu": "400m", "memory": "704Mi"},
                                 "limits": {"memory": "704Mi"}}  # fmt: skip
    assert data["basis"]["runs"] == 2 and data["basis"]["rows"] == 7200
    assert data["current"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert data["difference"]["core_hours"] == pytest.approx(0.6 * 2, abs=0.01)
    table = report(str(out)).stdout
    assert "cpu request" in table and "400m" in table and "core-hours" in table
    yaml_block = report(str(out), "--format", "yaml").stdout
    assert yaml_block.startswith("resources:\n  requests:\n    cpu: 400m\n")


def test_chunks_are_read_in_the_order_of_their_numbers(tmp_path: Path):
    # Sorted as text, an older run's 10000.csv.gz came before 9999.csv.gz.
    directory = tmp_path / "out"
    directory.mkdir()
    for name, first in (("9999.csv.gz", 0), ("10000.csv.gz", 10)):
        body = HEADER + "".join(row(1_700_000_000 + first + i, 0.5, 100.0) for i in range(10))
        (directory / name).write_bytes(gzip.compress(body.encode()))
    data = json.loads(report(str(directory), "--format", "json").stdout)
    assert data["basis"]["rows"] == 20
    from sentinel_sidecar.report.runs import load

    names = [Path(name).name for name in load(str(directory)).files]
    assert names == ["9999.csv.gz", "10000.csv.gz"]


def test_a_direct_s3_run_prefix(tmp_path: Path, moto):
    bucket = moto.new_bucket()
    s3 = moto.client("s3")
    rows = [row(1_700_000_000 + i, 1.2, 2000.0) for i in range(100)]
    for seq, part in ((1, rows[:50]), (2, rows[50:])):
        body = gzip.compress((HEADER + "".join(part)).encode())
        s3.put_object(Bucket=bucket, Key=f"runs/pod-1/{seq:06d}.csv.gz", Body=body)
    s3.put_object(Bucket=bucket, Key="runs/pod-1/run.json", Body=b'{"run_id": "pod-1"}')
    env = {"AWS_ENDPOINT_URL_S3": moto.endpoint, "AWS_REGION": REGION,
           "AWS_ACCESS_KEY_ID": moto.user["aws_access_key_id"],
           "AWS_SECRET_ACCESS_KEY": moto.user["aws_secret_access_key"]}  # fmt: skip
    result = report(f"s3://{bucket}/runs/pod-1", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["basis"]["rows"] == 100 and data["runs"][0]["run_id"] == "pod-1"
    assert data["resources"]["requests"] == {"cpu": "1200m", "memory": "2304Mi"}
    missing = report(f"s3://{bucket}/runs/nothing", env=env)
    assert missing.returncode == 2 and "holds no chunk 000001.csv.gz" in missing.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [(["--cpu-percentile", "0"], "--cpu-percentile: 0 is not in (0, 100]"),
     (["--memory-margin", "-1"], "--memory-margin: -1 is not >= 0"),
     (["--cpu-limit-factor", "0.5"], "--cpu-limit-factor: 0.5 is not >= 1"),
     (["s3://Bad_Bucket/x"], "no valid bucket name")],
)  # fmt: skip
def test_bad_report_input_exits_2(tmp_path: Path, args: list[str], expected: str):
    out = output_dir(tmp_path / "out", [row(1.0, 0.1, 10.0)])
    result = report(str(out), *args)
    assert result.returncode == 2 and expected in result.stderr


def html_page(tmp_path: Path, gpu: bool = False) -> str:
    rows = [row(1_700_000_000 + i, 0.3 + (i % 60) / 100, 400 + i / 10, 0.7 if gpu else 0.0)
            for i in range(1200)]  # fmt: skip
    summary = {"run_id": "r1", "started_at": "2023-11-14T22:13:20.000+00:00", "exit_code": 137,
               "identity": {"cloud_region_id": {"value": "us-east-1", "source": "node"},
                            "job_name": {"value": "nightly-train", "source": "pod"}},
               "resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}  # fmt: skip
    out = output_dir(tmp_path / "out", rows, summary)
    result = report(str(out), "--html", str(tmp_path / "report.html"))
    assert result.returncode == 0, result.stderr
    assert f"wrote {tmp_path / 'report.html'}" in result.stderr  # says where the page is
    return (tmp_path / "report.html").read_text()


def test_the_page_is_self_contained_with_every_chart_and_series(tmp_path: Path):
    page = html_page(tmp_path, gpu=True)
    assert not re.search(r"<script|<link|<img|@import|url\((?!#)", page, re.IGNORECASE)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    for series in ("process_cpu_usage", "process_memory_mib", "process_disk_read_bytes",
                   "process_disk_write_bytes", "process_gpu_usage"):  # fmt: skip
        assert f'id="series-{series}-1"' in page, series
    assert "system_net" not in page  # node-wide figures are not the workload's
    assert page.count("<svg") == 4
    assert 'id="line-recommended-request"' in page and 'id="line-current-request"' in page
    without_gpu = html_page(tmp_path / "b")
    assert without_gpu.count("<svg") == 3 and "series-process_gpu_usage" not in without_gpu


def test_the_page_says_which_job_when_how_it_ended_what_to_set_and_the_totals(tmp_path: Path):
    page = html_page(tmp_path)
    text = re.sub(r"<[^>]+>", " ", page[page.index("<body>") : page.index("<svg")])
    text = " ".join(text.split())
    assert text.startswith(
        "nightly-train: what it used job nightly-train · started 2023-11-14 22:13 UTC · "
        "duration 20 min · ended exit 137 (failed)"
    )
    # The recommendation as a table, and the block to paste as it is.
    assert "<td>cpu request</td><td>860m</td><td>2</td>" in page
    assert "<pre>resources:\n  requests:\n    cpu: 860m\n" in page
    # 1200 s at a mean of 0.595 cores and 460 MiB; 4096 B read per 1 s row; p95 0.86 cores;
    # it ended with exit 137: memory raised for an OOM kill, and said.
    assert "current requests minus recommended +0.38 core-hours, +0.10 GiB-hours" in text
    assert "oom: 1 of 1 run(s) ended OOM-killed" in text and "raised for OOM kills" in page
    assert "CPU 0.198 core-hours" in text and "memory 0.15 GiB-hours" in text
    assert "disk read 4.9 MB" in text and "disk written 9.8 MB" in text
    assert "<td>cloud_region_id</td><td>us-east-1</td><td>node</td>" in page
    [disk] = [chart for chart in page.split('<section class="chart">') if ">Disk<" in chart]
    assert "MB/s" in disk and "1e6" not in disk and "bytes per interval" not in page


def test_too_little_data_is_refused_not_recommended_from(tmp_path: Path):
    one_row = output_dir(tmp_path / "one", [row(1.0, 0.5, 100.0)])
    result = report(str(one_row))
    assert result.returncode == 3 and result.stdout == ""
    assert "too little to recommend from: 1 row(s), 1 of the workload" in result.stderr
    never_seen = output_dir(tmp_path / "none", [row(1.0 + i, 0.0, 0.0) for i in range(50)])
    result = report(str(never_seen), "--format", "json")
    assert result.returncode == 3 and "the workload was never seen" in result.stderr


def test_a_runs_parent_directory_is_read_for_the_run_inside_even_without_run_json(
    tmp_path: Path,
):
    output_dir(tmp_path / "demo" / "output", [row(1.0 + i, 0.5, 100.0) for i in range(10)])
    result = report(str(tmp_path / "demo"), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["runs"][0]["source"] == str(tmp_path / "demo" / "output")
    empty = tmp_path / "empty"
    (empty / "nothing").mkdir(parents=True)
    result = report(str(empty))
    assert result.returncode == 2 and "holds no chunk" in result.stderr


def test_s3_without_credentials_says_so_and_asks_no_metadata_service(tmp_path: Path):
    # boto3's chain ends at the instance metadata service: on a laptop it waits on
    # 169.254.169.254. Here that service is a loopback peer that records every request.
    asked: list[str] = []

    class Metadata(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_PUT = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
           }  # fmt: skip
    try:
        result = report("s3://bucket/runs/pod-1", env=env)
        asked_outside = list(asked)
        in_pod = report("s3://bucket/runs/pod-1", env={**env, "KUBERNETES_SERVICE_HOST": "1"})
    finally:
        server.shutdown()
    assert result.returncode == 2 and "no AWS credentials found" in result.stderr
    assert asked_outside == []
    assert in_pod.returncode == 2 and asked  # in a pod, the chain may ask it


def test_headless_chromium_draws_non_blank_charts(tmp_path: Path):
    html_page(tmp_path)
    blue, orange = series_pixels(tmp_path / "report.html", tmp_path / "shot.png")
    assert blue > 2000 and orange > 500  # lines drawn in every chart, not an empty page


def test_the_cpu_basis_is_the_percentile_at_the_requests_10_millicore_step(tmp_path: Path):
    # The engine counts CPU figures rounded up to 10 millicores: the request is the one the
    # raw p95 (0.4094 cores) gives, and the basis shown is that step (0.41).
    out = output_dir(tmp_path / "out", [row(1_700_000_000 + i, 0.4 + i / 1e4, 600.0)
                                        for i in range(100)])  # fmt: skip
    data = json.loads(report(str(out), "--format", "json").stdout)
    assert data["resources"]["requests"]["cpu"] == cpu_quantity(0.4094) == "410m"
    assert data["basis"]["cpu_percentile_cores"] == 0.41


def test_group_by_takes_the_first_of_the_keys_named_that_a_run_has(tmp_path: Path):
    fleet = tmp_path / "fleet"
    for name, job, tags in (("a", "train", {"team": "ml"}), ("b", None, {"team": "ml"}),
                            ("c", None, {"team": "data"}), ("d", None, {})):  # fmt: skip
        identity = {"tags": {"value": tags, "source": "settings"}}
        if job:
            identity["job_name"] = {"value": job, "source": "pod"}
        output_dir(fleet / name, [row(1_700_000_000 + i, 0.5, 100.0) for i in range(10)],
                   {"run_id": name, "identity": identity})  # fmt: skip
    result = report(str(fleet), "--format", "json", "--group-by", "job,tag:team")
    assert result.returncode == 0, result.stderr
    groups = {group["group"]: len(group["runs"]) for group in json.loads(result.stdout)["groups"]}
    assert groups == {"job=train": 1, "team=ml": 1, "team=data": 1, f"run={fleet / 'd'}": 1}
    by_tag = json.loads(report(str(fleet), "--format", "json", "--group-by", "tag:team").stdout)
    assert {group["group"] for group in by_tag["groups"]} == {"team=ml", "team=data",
                                                             f"run={fleet / 'd'}"}  # fmt: skip
    wrong = report(str(fleet), "--group-by", "job,run")
    assert wrong.returncode == 2 and "--group-by: 'job,run' is not run, all" in wrong.stderr


def test_a_live_spools_half_written_last_row_is_left_out_not_the_segment(tmp_path: Path):
    spool = tmp_path / "spool"
    spool.mkdir()
    rows = [row(1_700_000_000 + i, 0.5, 300.0) for i in range(40)]
    half = rows[-1][: len(rows[-1]) // 2]  # the agent was writing it when report read
    (spool / segment_name(0, 0)).write_text(HEADER + "".join(rows[:-1]) + half)
    result = report(str(spool), "--format", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["basis"]["rows"] == 39 and data["runs"][0]["rows"] == 39
    assert "read without the rows that do not parse" in result.stderr
    assert any(flag.startswith("unreadable: 1 chunk(s) left out or read in part")
               for flag in data["flags"])  # fmt: skip
