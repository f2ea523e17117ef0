"""Check the GPU columns on a machine with an NVIDIA GPU (not run in CI; no GPU was available
where this was written). It runs a GPU workload — PyTorch matrix products if torch with CUDA is
installed, else a CUDA sample binary given with --sample — tracks it with the real agent at 1 s,
queries `nvidia-smi` every second at the same time, and prints the differences per column:

    python -m bench.gpu_check [--seconds 60] [--sample /usr/local/cuda/extras/demo_suite/...]
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sentinel_sidecar.spool.store import spool_files

TORCH_LOAD = (
    "import time, torch\n"
    "x = torch.rand(8192, 8192, device='cuda')\n"
    "end = time.time() + {seconds}\n"
    "while time.time() < end:\n"
    "    for _ in range(20): x @ x\n"
    "    torch.cuda.synchronize(); time.sleep(0.2)\n"
)


def smi(query: str, what: str) -> list[list[str]]:
    command = ["nvidia-smi", f"--query-{what}={query}", "--format=csv,noheader,nounits"]
    text = subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if row]


def workload(seconds: float, sample: str | None) -> subprocess.Popen[bytes]:
    if sample:
        return subprocess.Popen([sample])
    try:
        import torch  # type: ignore[import-not-found]  # on a GPU machine only

        if not torch.cuda.is_available():
            raise ImportError
    except ImportError:
        sys.exit("gpu_check: needs PyTorch with CUDA, or --sample <a CUDA sample binary>")
    return subprocess.Popen([sys.executable, "-c", TORCH_LOAD.format(seconds=seconds)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--sample", help="a CUDA sample binary to run instead of PyTorch")
    args = parser.parse_args()
    if shutil.which("nvidia-smi") is None:
        print("gpu_check: nvidia-smi not found: this needs a machine with an NVIDIA GPU")
        return 1
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    job = workload(args.seconds, args.sample)
    agent = subprocess.Popen(
        [sys.executable, "-m", "sentinel_sidecar", "run", "--pid", str(job.pid), "--interval", "1",
         "--spool-dir", str(work / "spool"), "--output-dir", str(work / "out"),
         "--health-port", "0", "--cloud-detect", "false"])  # fmt: skip
    truth: dict[int, dict[str, float]] = {}
    while job.poll() is None:
        gpus = smi("utilization.gpu,memory.used", "gpu")
        apps = smi("pid,used_memory", "compute-apps")
        truth[int(time.time())] = {
            "system_gpu_usage": sum(float(u) for u, _ in gpus) / 100,
            "system_gpu_vram_mib": sum(float(m) for _, m in gpus),
            "process_gpu_vram_mib": sum(float(m) for pid, m in apps if int(pid) == job.pid),
        }
        time.sleep(1)
    agent.send_signal(signal.SIGTERM)
    agent.wait(60)
    rows = [row for path in spool_files(work / "spool") for row in csv.DictReader(path.open())]
    print(f"{len(rows)} rows, {len(truth)} nvidia-smi samples, workload pid {job.pid}\n")
    print("| column | agent mean | nvidia-smi mean | mean abs. difference |\n|---|---|---|---|")
    for column in ("system_gpu_usage", "system_gpu_vram_mib", "process_gpu_vram_mib"):
        pairs = [(float(row[column]), truth[second][column]) for row in rows
                 if (second := int(float(row["timestamp"]))) in truth]  # fmt: skip
        if not pairs:
            continue
        ours, theirs = zip(*pairs, strict=True)
        difference = statistics.mean(abs(a - b) for a, b in pairs)
        print(f"| {column} | {statistics.mean(ours):.2f} | {statistics.mean(theirs):.2f} | "
              f"{difference:.2f} |")  # fmt: skip
    print("\nIn a container NVML names the node's pids, so process_gpu_* are the device figures "
          "of the workload's GPUs; here, on the host, they are the process's own.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
