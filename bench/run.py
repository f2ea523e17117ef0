"""What the sidecar costs, measured on this machine; see bench/README.md.

    python -m bench.run [--quick] [--growth-rows N]

Writes bench/results/<date>.json and docs/PERFORMANCE.md, prints the Markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.workload import Workload, rss_mib, tree, tree_usage
from sentinel_sidecar import log
from sentinel_sidecar.delivery.s3 import S3Destination, S3Store
from sentinel_sidecar.delivery.sentinel_api import Credentials
from sentinel_sidecar.delivery.upload import Uploader, gzip_chunk
from sentinel_sidecar.measure.cgroup import CgroupReader
from sentinel_sidecar.measure.collect import Collector
from sentinel_sidecar.measure.node import NodeReader
from sentinel_sidecar.measure.proc_reader import ProcReader
from sentinel_sidecar.measure.procfs import clock_ticks, raise_fd_limit
from sentinel_sidecar.measure.rows import Schema, header_line, make_row
from sentinel_sidecar.spool.segment import parse_segment_name
from sentinel_sidecar.spool.state import State, StateStore
from sentinel_sidecar.spool.store import Spool, spool_files
from sentinel_sidecar.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent
CGROUP_ROOT = Path("/sys/fs/cgroup")
MIB = 1024 * 1024
NOTES_MARKER = "<!-- notes: kept across bench runs -->"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def agent_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sentinel_sidecar", *args]


def start_agent(pid: int, interval: float, spool: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`sentinel-sidecar run` in local mode tracking the process tree `pid`."""
    return subprocess.Popen(
        agent_command("run", "--pid", str(pid), "--interval", str(interval), "--spool-dir",
                      str(spool), "--log-level", "warning", *extra)
    )  # fmt: skip


# --- 1. per tick ------------------------------------------------------------------------------


def per_tick(sizes: list[int], ticks: int) -> list[dict[str, Any]]:
    """Wall and CPU time of one sample (reads + row + spool append) per workload size and path."""
    results: list[dict[str, Any]] = []
    for size in sizes:
        for path in ("proc", "cgroup"):
            workload = Workload(size, CGROUP_ROOT if path == "cgroup" else None)
            try:
                if path == "cgroup" and workload.cgroup is None:
                    results.append(
                        {"processes": size, "path": path, "skipped": "no writable cgroup"}
                    )
                    continue
                procs = ProcReader(Path("/proc"))
                collector = Collector(
                    procs,
                    NodeReader(Path("/proc"), clock_ticks()),
                    CgroupReader(CGROUP_ROOT, clock_ticks()),
                    pid=workload.pid if path == "proc" else None,
                    cgroup=workload.cgroup,
                )
                with tempfile.TemporaryDirectory() as spool_dir:
                    spool = Spool(Path(spool_dir), header_line(Schema.SENTINEL))
                    previous = collector.read()
                    walls, cpus = [], []
                    for _ in range(ticks):
                        wall0, cpu0 = time.perf_counter(), time.thread_time()
                        reading = collector.read()
                        spool.append(",".join(make_row(previous, reading, Schema.SENTINEL)) + "\n")
                        walls.append(time.perf_counter() - wall0)
                        cpus.append(time.thread_time() - cpu0)
                        previous = reading
                        time.sleep(0.01)
                    seen = reading.workload.process_count
                    spool.close()
                    collector.close()
                results.append(
                    {
                        "processes": size,
                        "path": path,
                        "seen": seen,
                        "wall_ms": round(median(walls) * 1000, 3),
                        "cpu_ms": round(median(cpus) * 1000, 3),
                    }
                )
            finally:
                workload.stop()
    return results


def kernel_floor(processes: int, ticks: int) -> dict[str, Any]:
    """The reads no /proc sampler can skip: `stat` and `io` of every process, on kept-open
    files, timed like a tick (10 ms apart, so with the caches a real tick finds)."""
    workload = Workload(processes)
    try:
        pids = tree(workload.pid)
        fds = [
            os.open(f"/proc/{pid}/{name}", os.O_RDONLY) for pid in pids for name in ("stat", "io")
        ]
        cpus = []
        for _ in range(ticks):
            cpu0 = time.thread_time()
            for fd in fds:
                os.pread(fd, 4096, 0)
            cpus.append(time.thread_time() - cpu0)
            time.sleep(0.01)
        for fd in fds:
            os.close(fd)
    finally:
        workload.stop()
    return {"processes": len(pids), "cpu_ms": round(median(cpus) * 1000, 3)}


_HOLD = r"""
import sys
block = bytearray(int(float(sys.argv[1]) * 1024) * 2**20)
block[::4096] = b"\1" * (len(block) // 4096)
print("ready", flush=True)
sys.stdin.readline()
"""


def smaps_cost(sizes_gib: list[float], repeats: int) -> list[dict[str, Any]]:
    """What one read of `smaps_rollup` (PSS) costs against one of `stat`, per resident size."""
    results = []
    for size in sizes_gib:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLD, str(size)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
            timings = {}
            for name in ("smaps_rollup", "stat"):
                fd = os.open(f"/proc/{holder.pid}/{name}", os.O_RDONLY)
                walls = []
                for _ in range(repeats):
                    wall0 = time.perf_counter()
                    os.pread(fd, 4096, 0)
                    walls.append(time.perf_counter() - wall0)
                os.close(fd)
                timings[name] = median(walls)
            results.append(
                {
                    "resident_gib": size,
                    "smaps_rollup_ms": round(timings["smaps_rollup"] * 1000, 3),
                    "stat_ms": round(timings["stat"] * 1000, 4),
                }
            )
        finally:
            holder.kill()
            holder.wait(30)
    return results


# --- 2 + 5. steady state, side by side with resource-tracker ----------------------------------

PEER = """
import sys, time
from resource_tracker import ResourceTracker
tracker = ResourceTracker(pid=int(sys.argv[1]), interval=1, autostart=True,
                          discover_server=False, discover_cloud=False)
print("started", flush=True)
time.sleep(float(sys.argv[2]))
tracker.stop()
"""


STARTUP_S = 5.0


def steady_state(seconds: float, processes: int) -> dict[str, Any]:
    """Ours and resource-tracker started together next to the same workload: CPU-seconds from
    exec to `seconds` (start-up included), and the steady share after STARTUP_S."""
    workload = Workload(processes)
    spool = Path(tempfile.mkdtemp(prefix="bench-steady-"))
    started = time.monotonic()
    ours = start_agent(workload.pid, 1, spool, "--health-port", str(free_port()))
    peer = None
    if _has_peer():
        peer = subprocess.Popen(
            [sys.executable, "-c", PEER, str(workload.pid), str(seconds + 10)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # its tracker processes are killed with it
        )
        assert peer.stdout is not None
        peer.stdout.readline()
    try:
        time.sleep(max(0.0, started + STARTUP_S - time.monotonic()))  # both past start-up
        cpu0 = tree_usage(ours.pid)[0]
        peer_cpu0 = tree_usage(peer.pid)[0] if peer else 0.0
        peak = peer_peak = 0.0
        end = started + seconds
        while time.monotonic() < end:
            peak = max(peak, tree_usage(ours.pid)[1])
            if peer:
                peer_peak = max(peer_peak, tree_usage(peer.pid)[1])
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        cpu1, rss, _ = tree_usage(ours.pid)
        window = seconds - STARTUP_S
        result: dict[str, Any] = {
            "seconds": seconds,
            "processes": processes,
            "cpu_seconds_with_startup": round(cpu1, 3),
            "cpu_percent": round((cpu1 - cpu0) / window * 100, 3),
            "rss_mib": round(rss, 1),
            "peak_rss_mib": round(max(peak, rss_mib(ours.pid)[1]), 1),
        }
        if peer:
            peer_cpu1, peer_rss, _ = tree_usage(peer.pid)
            result["peer"] = {
                "name": "resource-tracker " + _peer_version(),
                "processes": len(tree(peer.pid)),
                "cpu_seconds_with_startup": round(peer_cpu1, 3),
                "cpu_percent": round((peer_cpu1 - peer_cpu0) / window * 100, 3),
                "rss_mib": round(peer_rss, 1),
                "peak_rss_mib": round(peer_peak, 1),
            }
        return result
    finally:
        ours.terminate()
        ours.wait(30)
        if peer:
            os.killpg(peer.pid, signal.SIGKILL)
            peer.wait(30)
        workload.stop()
        shutil.rmtree(spool, ignore_errors=True)


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the agent's health server stays on, as deployed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _has_peer() -> bool:
    return importlib.util.find_spec("resource_tracker") is not None


def _peer_version() -> str:
    from importlib.metadata import version

    return version("resource-tracker")


def rows_written(spool: Path) -> int:
    """Rows the agent has spooled so far: the newest segment's name counts the rows before it
    (older segments are deleted once delivered)."""
    files = spool_files(spool)
    if not files:
        return 0
    newest = files[-1]
    name = parse_segment_name(newest.name)
    before = name[1] if name is not None else 0
    return before + max(0, newest.read_bytes().count(b"\n") - 1)


def growth(rows: int, interval: float, processes: int) -> dict[str, Any]:
    """RSS against rows written at a fast interval; slope extrapolated to an hour at 1 s."""
    workload = Workload(processes)
    spool = Path(tempfile.mkdtemp(prefix="bench-growth-"))
    agent = start_agent(
        workload.pid, interval, spool, "--upload-interval", "5", "--health-port", "0"
    )
    samples: list[tuple[int, float]] = []
    started = time.monotonic()
    try:
        while True:
            time.sleep(1)
            written = rows_written(spool)
            samples.append((written, rss_mib(agent.pid)[0]))
            if written >= rows:
                break
    finally:
        agent.terminate()
        agent.wait(60)
        workload.stop()
        shutil.rmtree(spool, ignore_errors=True)
    half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    xs, ys = [s[0] for s in half], [s[1] for s in half]
    slope = statistics.linear_regression(xs, ys).slope if len(set(xs)) > 1 else 0.0
    return {
        "rows": samples[-1][0],
        "interval": interval,
        "seconds": round(time.monotonic() - started, 1),
        "rss_start_mib": round(samples[0][1], 1),
        "rss_end_mib": round(samples[-1][1], 1),
        "mib_per_1k_rows_second_half": round(slope * 1000, 4),
        "mib_per_hour_at_1s": round(slope * 3600, 3),
    }


# --- 3. start-up ------------------------------------------------------------------------------


def first_row(repeats: int) -> dict[str, Any]:
    """Seconds from exec of `sentinel-sidecar run` (interval 1 s) to its first spooled row."""
    times = []
    for _ in range(repeats):
        spool = Path(tempfile.mkdtemp(prefix="bench-start-"))
        started = time.perf_counter()
        agent = start_agent(1, 1, spool, "--health-port", "0")
        while not rows_written(spool):
            time.sleep(0.002)
        times.append(time.perf_counter() - started)
        agent.terminate()
        agent.wait(30)
        shutil.rmtree(spool, ignore_errors=True)
    return {"first_row_s": round(median(times), 3), "repeats": repeats}


def imports(repeats: int) -> dict[str, Any]:
    """Import cost of the CLI, with boto3 lazy (as shipped) and eager (imported up front)."""
    result: dict[str, Any] = {}
    # VmHWM, not ru_maxrss: ru_maxrss survives exec and would report the bench's own peak.
    probe = (
        "import time; t = time.perf_counter(); {imports}; elapsed = time.perf_counter() - t; "
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]; "
        "print(elapsed, hwm)"
    )
    for name, imports_ in (
        ("lazy_boto3", "import sentinel_sidecar.cli"),
        ("eager_boto3", "import sentinel_sidecar.cli, boto3, botocore.config"),
    ):
        seconds, rss = [], []
        for _ in range(repeats):
            out = subprocess.run(
                [sys.executable, "-c", probe.format(imports=imports_)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            seconds.append(float(out[0]))
            rss.append(int(out[1]) / 1024)
        result[name] = {"import_s": round(median(seconds), 3), "max_rss_mib": round(median(rss), 1)}
    timing = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import sentinel_sidecar.cli"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    top = []
    for line in timing.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) <= 3:  # top-level imports of the package and its modules
            top.append((int(match.group(2)), match.group(4)))
    result["top_imports_ms"] = {name: round(us / 1000, 1) for us, name in sorted(top)[-8:][::-1]}
    return result


# --- 4. upload path ---------------------------------------------------------------------------


def upload_path(repeats: int) -> dict[str, Any]:
    """gzip and put of chunks of real rows against the moto S3 server."""
    sys.path.insert(0, str(ROOT))
    from tests.support.peers import MotoServer

    rows = _real_rows(120)
    header = header_line(Schema.SENTINEL).encode()
    big = (rows * (8 * MIB // len(rows) + 1))[: 8 * MIB]
    big = big[: big.rfind(b"\n") + 1]
    gz_times = []
    for _ in range(repeats):
        started = time.perf_counter()
        body = gzip_chunk(header, big)
        gz_times.append(time.perf_counter() - started)
    moto = MotoServer()
    try:
        bucket = moto.new_bucket()
        issued = moto.assume_role("bench")
        credentials = Credentials(
            issued["AccessKeyId"],
            issued["SecretAccessKey"],
            issued["SessionToken"],
            issued["Expiration"],
            expires_in=3600.0,
            answered=time.monotonic(),
            region="us-east-1",
        )
        objects = S3Store(f"s3://{bucket}/bench", region=None, endpoint_url=moto.endpoint)
        objects.use_credentials(credentials)
        # the first connection outside the timing
        forever = time.monotonic() + 3600
        objects.put(f"{1:06d}.csv.gz", b"warm-up", "application/gzip", forever)
        put_times = []
        for seq in range(repeats):
            started = time.perf_counter()
            chunk = gzip_chunk(header, big)
            objects.put(f"{seq + 2:06d}.csv.gz", chunk, "application/gzip", forever)
            put_times.append(time.perf_counter() - started)
        minute = rows[: len(rows) // 2]  # 60 rows: one upload_interval at interval 1 s
        # The direct-S3 destination on botocore's default chain: the moto user's keys.
        os.environ.update(
            AWS_ACCESS_KEY_ID=moto.user["aws_access_key_id"],
            AWS_SECRET_ACCESS_KEY=moto.user["aws_secret_access_key"],
        )
        destination = S3Destination(
            f"s3://{bucket}/cycle", name="bench", identity=lambda deadline: {"job_name": "bench"},
            region="us-east-1", endpoint_url=moto.endpoint,
        )  # fmt: skip
        cycle_wall, cycle_cpu = [], []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as spool_dir:
                spool = Spool(Path(spool_dir), header.decode())
                spool.append(minute.decode())
                store = StateStore(Path(spool_dir))
                state = State(None, None, 0, spool.data_start, header.decode(), False, 0.0)
                state = destination.open(state, time.monotonic() + 60)
                uploader = Uploader(
                    spool, store, state, destination, max_chunk_bytes=8 * MIB, telemetry=Telemetry()
                )
                wall0, cpu0 = time.perf_counter(), time.thread_time()
                uploader.upload_next(time.monotonic() + 60)
                cycle_wall.append(time.perf_counter() - wall0)
                cycle_cpu.append(time.thread_time() - cpu0)
                spool.close()
    finally:
        moto.close()
    return {
        "row_bytes": round(len(rows) / rows.count(b"\n"), 1),
        "compression_ratio": round(len(header + big) / len(body), 1),
        "gzip_mb_s": round(len(big) / median(gz_times) / 1e6, 1),
        "gzip_put_8mib_mb_s": round(len(big) / median(put_times) / 1e6, 1),
        "cycle_60_rows_wall_ms": round(median(cycle_wall) * 1000, 2),
        "cycle_60_rows_cpu_ms": round(median(cycle_cpu) * 1000, 2),
    }


def _real_rows(count: int) -> bytes:
    """`count` rows sampled from a real 10-process workload at a fast interval."""
    workload = Workload(10)
    try:
        collector = Collector(
            ProcReader(Path("/proc")),
            NodeReader(Path("/proc"), clock_ticks()),
            CgroupReader(CGROUP_ROOT),
            pid=workload.pid,
        )
        previous, lines = collector.read(), []
        for _ in range(count):
            time.sleep(0.02)
            reading = collector.read()
            lines.append(",".join(make_row(previous, reading, Schema.SENTINEL)) + "\n")
            previous = reading
    finally:
        workload.stop()
    return "".join(lines).encode()


# --- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu_model,
        "cores": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cgroup_layout": CgroupReader(CGROUP_ROOT).layout.value,
    }


def mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(results: dict[str, Any]) -> str:
    lines = ["| measure | value | target | |", "|---|---|---|---|"]

    def row(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        lines.append(f"| {name} | {value} | {target} | {'' if ok is None else mark(ok)} |")

    for entry in results["per_tick"]:
        name = f"per tick, {entry['processes']} processes, {entry['path']} path"
        if "skipped" in entry:
            row(name, "skipped: " + entry["skipped"])
            continue
        limit = {100: 1.5, 1000: 20.0}.get(entry["processes"])
        row(
            name,
            f"{entry['wall_ms']} ms wall, {entry['cpu_ms']} ms CPU",
            f"<= {limit} ms wall" if limit else "",
            entry["wall_ms"] <= limit if limit else None,
        )
    floor = results["kernel_floor"]
    row(
        f"kernel floor: pread of stat + io, {floor['processes']} processes",
        f"{floor['cpu_ms']} ms CPU",
    )
    for entry in results["smaps"]:
        row(
            f"one read of smaps_rollup (PSS), {entry['resident_gib']} GiB resident",
            f"{entry['smaps_rollup_ms']} ms (stat: {entry['stat_ms']} ms)",
        )
    steady = results["steady_state"]
    row(
        f"steady state, interval 1 s, {steady['processes']} processes: CPU",
        f"{steady['cpu_percent']} % of one core",
        "<= 0.25 %",
        steady["cpu_percent"] <= 0.25,
    )
    row(
        f"CPU-seconds over {steady['seconds']} s from exec (start-up included)",
        f"{steady['cpu_seconds_with_startup']} s",
    )
    row(
        "RSS, local mode (peak)",
        f"{steady['rss_mib']} MiB ({steady['peak_rss_mib']} MiB)",
        "<= 25 MiB",
        steady["peak_rss_mib"] <= 25,
    )
    grow = results["growth"]
    row(
        f"RSS growth ({grow['rows']} rows at {grow['interval']} s)",
        f"{grow['rss_start_mib']} -> {grow['rss_end_mib']} MiB; "
        f"{grow['mib_per_hour_at_1s']} MiB per hour at 1 s",
        "no growth",
        abs(grow["mib_per_hour_at_1s"]) < 0.5,
    )
    start = results["startup"]
    row(
        "first row after exec (interval 1 s)",
        f"{start['first_row_s']} s",
        "< 1.5 s",
        start["first_row_s"] < 1.5,
    )
    imp = results["imports"]
    row(
        "import sentinel_sidecar.cli, boto3 lazy (as shipped)",
        f"{imp['lazy_boto3']['import_s']} s, {imp['lazy_boto3']['max_rss_mib']} MiB",
    )
    row(
        "import sentinel_sidecar.cli, boto3 eager (before)",
        f"{imp['eager_boto3']['import_s']} s, {imp['eager_boto3']['max_rss_mib']} MiB",
    )
    up = results["upload"]
    row("gzip of real rows", f"{up['gzip_mb_s']} MB/s raw, ratio {up['compression_ratio']}:1")
    row("gzip + put of an 8 MiB chunk to moto S3", f"{up['gzip_put_8mib_mb_s']} MB/s raw")
    row(
        "one upload cycle, 60 rows",
        f"{up['cycle_60_rows_wall_ms']} ms wall, {up['cycle_60_rows_cpu_ms']} ms CPU",
    )
    peer = steady.get("peer")
    if peer:
        ratio = peer["cpu_seconds_with_startup"] / max(steady["cpu_seconds_with_startup"], 1e-9)
        row(
            f"{peer['name']} ({peer['processes']} processes): steady CPU, RSS",
            f"{peer['cpu_percent']} %, {peer['rss_mib']} MiB",
        )
        row(
            f"{peer['name']}: CPU-seconds over {steady['seconds']} s from exec",
            f"{peer['cpu_seconds_with_startup']} s ({ratio:.1f}x ours)",
        )
    accuracy = results["accuracy"]
    if "skipped" in accuracy:
        row("/proc path in a simulated pod", "skipped: " + accuracy["skipped"])
    for shape, entry in accuracy.get("shapes", {}).items():
        row(
            f"/proc path in a pod, {shape}: CPU, peak memory vs the workload cgroup",
            f"{entry['cpu_error']:+.1%} ({entry['cpu_s']} of {entry['true_cpu_s']} s), "
            f"{entry['memory_error']:+.1%}",
            "within 3 %, 10 %",
            abs(entry["cpu_error"]) <= 0.03 and abs(entry["memory_error"]) <= 0.10,
        )
        if "peer" in entry:
            row(
                f"resource-tracker, same pod shape {shape}: CPU, peak memory",
                f"{entry['peer']['cpu_error']:+.1%} ({entry['peer']['cpu_s']} s), "
                f"{entry['peer']['memory_error']:+.1%}",
            )
    return "\n".join(lines)


def write_report(results: dict[str, Any], markdown: str) -> Path:
    out = ROOT / "bench" / "results" / f"{results['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    info = results["machine"]
    top = ", ".join(f"{name} {ms} ms" for name, ms in results["imports"]["top_imports_ms"].items())
    doc = ROOT / "docs" / "PERFORMANCE.md"
    doc.parent.mkdir(exist_ok=True)
    # Hand-written notes below the marker survive a new run of the bench.
    notes = doc.read_text().partition(NOTES_MARKER)[2] if doc.exists() else ""
    doc.write_text(
        "# Performance\n\n"
        f"Measured {results['date']} with `python -m bench.run` (see `bench/README.md`) on "
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, Linux "
        f"{info['kernel']}, Python {info['python']}, cgroup layout {info['cgroup_layout']}. "
        "Medians of repeated runs; raw figures in "
        f"`bench/results/{results['date']}.json`.\n\n{markdown}\n\n"
        f"Largest imports of `sentinel_sidecar.cli` (cumulative): {top}.\n\n"
        f"Pid namespace: {results['pid_namespace']}. To reproduce: `pip install -e '.[bench]'` "
        "then `python -m bench.run` (as root: the cgroup path, the simulated pod, and a pid "
        "namespace of its own as a sidecar has; about twelve minutes).\n\n" + NOTES_MARKER + notes
    )
    return out


_IN_POD = "SENTINEL_BENCH_IN_PID_NAMESPACE"
# PID 1 of the bench's pid namespace: runs the bench and reaps every orphan until it exits.
_REAPER = """
import os, sys
bench = os.fork()
if bench == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
while True:
    pid, status = os.wait()
    if pid == bench:
        sys.exit(os.waitstatus_to_exitcode(status))
"""


def pod_accuracy(quick: bool) -> dict[str, Any]:
    """Errors per workload shape on the /proc path in a simulated pod (root only)."""
    from bench import accuracy
    from tests.support.pod import SHAPES

    reason = accuracy.available()
    if reason is not None:
        return {"skipped": reason}
    names = ["short_children", "shared_workers"] if quick else sorted(SHAPES)
    return {"shapes": accuracy.shapes(names, with_peer={"short_children"})}


def main() -> None:
    raise_fd_limit()  # as the agent does at start: a /proc file kept open per process
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, short windows")
    parser.add_argument("--growth-rows", type=int, default=30000)
    parser.add_argument("--growth-interval", type=float, default=0.01)
    parser.add_argument(
        "--host-pids",
        action="store_true",
        help="stay in the host's pid namespace (default as root: a new one, as in a pod)",
    )
    args = parser.parse_args()
    if not args.host_pids and os.geteuid() == 0 and os.environ.get(_IN_POD) != "1":
        # A sidecar sees its pod's processes, not the node's kernel threads and daemons. PID 1
        # reaps orphans as pause does: zombies left visible would be read on every tick.
        os.environ[_IN_POD] = "1"
        unshare = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
        bench = [sys.executable, "-m", "bench.run", *sys.argv[1:]]
        os.execvp("unshare", [*unshare, sys.executable, "-c", _REAPER, *bench])
    log.configure("warning")
    quick = args.quick
    steps: dict[str, Callable[[], Any]] = {
        "per_tick": lambda: per_tick(
            [1, 10, 100] if quick else [1, 10, 100, 1000], 20 if quick else 100
        ),
        "kernel_floor": lambda: kernel_floor(100, 20 if quick else 100),
        "smaps": lambda: smaps_cost([0.1, 1.0] if quick else [0.1, 1.0, 4.0], 5 if quick else 20),
        "accuracy": lambda: pod_accuracy(quick),
        "steady_state": lambda: steady_state(20 if quick else 60, 100),
        "growth": lambda: growth(500 if quick else args.growth_rows, args.growth_interval, 100),
        "startup": lambda: first_row(3 if quick else 7),
        "imports": lambda: imports(3 if quick else 7),
        "upload": lambda: upload_path(3 if quick else 7),
    }
    results: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(),
        "quick": quick,
        "pid_namespace": "own (as in a pod)" if os.environ.get(_IN_POD) == "1" else "host",
    }
    for name, step in steps.items():
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results[name] = step()
    markdown = table(results)
    path = write_report(results, markdown)
    print(markdown)
    print(f"\nresults: {path.relative_to(ROOT)}, docs/PERFORMANCE.md", file=sys.stderr)


if __name__ == "__main__":
    main()
