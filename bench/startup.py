"""Start-up alone: the agent (local mode, health server on) tracking a sleeping process is
stopped as soon as its first row is in the spool.

- CPU-seconds (default): the agent is SIGKILLed at its first row; its CPU from exec comes from
  `wait4`, its peak RSS from VmHWM just before (`wait4`'s ru_maxrss also counts the bench's own
  memory from before the exec). This machine moves these by +-20 % between sittings: compare
  checkouts in one sitting, alternated (`--checkout DIR`, repeatable).
- `--instructions`: the instructions it executed from exec to its first row, under callgrind
  (`apt-get install valgrind`) with `PYTHONHASHSEED=0`: the same to within 0.1 % from run to
  run, so a change of a few per cent is seen at once. The agent runs ~50x slower under it.

Bytecode is compiled first (`compileall`): a checkout run for the first time would otherwise
count the compiling. Not run in CI.

    python -m bench.startup [--runs 5] [--instructions] [--checkout DIR ...]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.run import free_port, rows_written
from bench.workload import rss_mib

FIRST_ROW_TIMEOUT = 30.0  # s; under callgrind the same start takes about a minute


def _agent(
    spool: Path, target: int, checkout: Path | None, env: dict[str, str]
) -> tuple[list[str], dict[str, str]]:
    argv = [sys.executable, "-m", "sentinel_sidecar", "run", "--pid", str(target),
            "--spool-dir", str(spool), "--health-port", str(free_port()),
            "--log-level", "warning"]  # fmt: skip
    env = {**os.environ, **env}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout / "app")  # ahead of the installed (editable) package
    return argv, env


@contextmanager
def _started(
    prefix: list[str], checkout: Path | None, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The agent (behind `prefix`) tracking a sleeper; cleaned up after."""
    sleeper = subprocess.Popen(["sleep", "600"])
    spool = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    argv, env = _agent(spool, sleeper.pid, checkout, env or {})
    agent = subprocess.Popen([*prefix, *argv], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        yield agent, spool
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        sleeper.kill()
        sleeper.wait()
        shutil.rmtree(spool, ignore_errors=True)


def _wait_first_row(spool: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while rows_written(spool) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no first row within {timeout:.0f} s")
        time.sleep(0.005)


def cpu_once(checkout: Path | None = None) -> tuple[float, float]:
    """CPU-seconds and peak RSS (MiB) of one agent from exec to its first row."""
    with _started([], checkout) as (agent, spool):
        _wait_first_row(spool, FIRST_ROW_TIMEOUT)
        peak = rss_mib(agent.pid)[1]
        agent.kill()
        _pid, _status, usage = os.wait4(agent.pid, 0)
        agent.returncode = -9  # reaped here
    return usage.ru_utime + usage.ru_stime, peak


def instructions_once(checkout: Path | None = None) -> int:
    """Instructions of one agent from exec to its first row (callgrind)."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    out = Path(tempfile.mkdtemp(prefix="bench-callgrind-"))
    try:
        prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg.%p"]
        seeded = {"PYTHONHASHSEED": "0"}  # the same dict and set orders every run
        with _started(prefix, checkout, seeded) as (agent, spool):
            _wait_first_row(spool, FIRST_ROW_TIMEOUT * 10)
            subprocess.run(["callgrind_control", "--dump", str(agent.pid)],
                           check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
            dumped = out / f"cg.{agent.pid}.1"
            deadline = time.monotonic() + 60
            while "summary:" not in _read(dumped):
                if time.monotonic() > deadline:
                    raise RuntimeError("callgrind wrote no dump within 60 s")
                time.sleep(0.1)
            agent.send_signal(signal.SIGKILL)
        summary = next(line for line in _read(dumped).splitlines() if line.startswith("summary:"))
        return int(summary.split()[1])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instructions", action="store_true", help="count with callgrind")
    parser.add_argument("--checkout", type=Path, action="append",
                        help="a checkout to measure (its app/); repeat to alternate")  # fmt: skip
    args = parser.parse_args()
    checkouts: list[Path | None] = list(args.checkout or [None])
    for checkout in checkouts:
        compileall.compile_dir(str((checkout or Path(__file__).parents[1]) / "app"), quiet=1)
    cpus: dict[Path | None, list[tuple[float, float]]] = {checkout: [] for checkout in checkouts}
    counts: dict[Path | None, list[int]] = {checkout: [] for checkout in checkouts}
    for _ in range(args.runs):  # alternated: a drift of the machine falls on every checkout
        for checkout in checkouts:
            if args.instructions:
                counts[checkout].append(instructions_once(checkout))
            else:
                cpus[checkout].append(cpu_once(checkout))
    for checkout in checkouts:
        name = checkout or "this checkout"
        if args.instructions:
            seen = counts[checkout]
            print(f"{name}: instructions to the first row: median "
                  f"{statistics.median(seen) / 1e6:.1f} M "
                  f"({min(seen) / 1e6:.1f}-{max(seen) / 1e6:.1f})")  # fmt: skip
        else:
            seen_cpu = [cpu for cpu, _ in cpus[checkout]]
            print(f"{name}: start-up CPU to the first row: median "
                  f"{statistics.median(seen_cpu):.3f} s "
                  f"({min(seen_cpu):.3f}-{max(seen_cpu):.3f}); peak RSS then "
                  f"{statistics.median(rss for _, rss in cpus[checkout]):.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
