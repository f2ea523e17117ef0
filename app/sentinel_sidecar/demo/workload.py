"""A small real workload for `sentinel-sidecar demo`: CPU, memory, a child process, file IO."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path


def burn(seconds: float) -> None:
    """Keep one core busy for `seconds`."""
    end = time.monotonic() + seconds
    value = 0
    while time.monotonic() < end:
        value = (value * 31 + 7) % 1_000_003


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        burn(args.seconds)
        return
    end = time.monotonic() + args.seconds
    phase = args.seconds / 3
    helper = subprocess.Popen(
        [sys.executable, "-m", "sentinel_sidecar.demo.workload", "--child", "--seconds", str(phase),
         "--dir", str(args.dir)]
    )  # fmt: skip
    burn(phase)
    ballast = bytearray(200 * 1024 * 1024)
    for index in range(0, len(ballast), 4096):
        ballast[index] = 1  # touch every page so it is really resident
    path = args.dir / "demo-workload.bin"
    with path.open("wb") as handle:
        for _ in range(32):
            handle.write(os.urandom(1024 * 1024))
            handle.flush()
            os.fsync(handle.fileno())
    time.sleep(max(0.0, end - phase / 2 - time.monotonic()))
    burn(max(0.0, end - time.monotonic()))
    del ballast
    path.unlink()
    helper.wait()


if __name__ == "__main__":
    main()
