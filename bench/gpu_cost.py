"""Per-tick cost of the GPU reading: `GpuReader.figures` against the stand-in NVML library of the
tests (tests/support/nvml_stub.c, compiled here with gcc) at 1 and 8 GPUs, in a fresh process
each (the library is found through LD_LIBRARY_PATH, as pynvml loads it). The stand-in answers at
once, so this is the agent's own cost per tick (pynvml's ctypes calls and the arithmetic), not the
driver's. Not run in CI:

    python -m bench.gpu_cost
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "tests" / "support" / "nvml_stub.c"

MEASURE = """
import json, statistics, sys, time
from sentinel_sidecar.measure.gpu import GpuReader
from sentinel_sidecar.measure.values import ReadErrors
reader = GpuReader(ReadErrors())
assert reader.available, reader.reason
pids, per_tick = {4242, 4243}, []
for _ in range(2000):
    started = time.perf_counter()
    reader.figures(pids, None)
    per_tick.append(time.perf_counter() - started)
print(json.dumps({"median_ms": statistics.median(per_tick) * 1000,
                  "p95_ms": sorted(per_tick)[int(len(per_tick) * 0.95)] * 1000}))
"""


def main() -> int:
    with tempfile.TemporaryDirectory() as work:
        library = Path(work) / "libnvidia-ml.so.1"
        subprocess.run(["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(STUB)],
                       check=True)  # fmt: skip
        print("| GPUs | per tick, median | p95 | per GPU |\n|---|---|---|---|")
        for count in (1, 8):
            config = Path(work) / f"gpus-{count}.cfg"
            lines = [f"device GPU-{i:04d} NVIDIA_A100 40960 {1024 * i} {10 * i} 250000 1000"
                     for i in range(count)]  # fmt: skip
            lines += ["process 0 4242 2048 30", "process 0 99999 1024 10"]
            config.write_text("\n".join(lines) + "\n")
            env = {**os.environ, "LD_LIBRARY_PATH": work, "NVML_STUB_CONFIG": str(config)}
            result = subprocess.run([sys.executable, "-c", MEASURE], env=env, check=True,
                                    capture_output=True, text=True)  # fmt: skip
            figures = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"| {count} | {figures['median_ms']:.3f} ms | {figures['p95_ms']:.3f} ms | "
                  f"{figures['median_ms'] / count:.3f} ms |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
