"""A Kubernetes pod simulated on this host with the kernel's own pieces (root only).

As containerd builds a pod with `shareProcessNamespace: true` on a cgroup v2 node:
- a pid namespace whose PID 1 is `pause`, which reaps the orphans of every container;
- one cgroup per container (pause, workload, sidecar), created fresh for each pod;
- each container's init enters the namespace from outside (`nsenter --pid`), so its parent is
  outside it (ppid 0) and it is reaped outside, as the runtime's shim does;
- the sidecar in its own cgroup namespace with a private cgroup2 mount and a /proc of the pod:
  the workload's cgroup lies outside its view, so it must measure through /proc.
The truth is the workload cgroup's own counters, read from the host side.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent.parent
CGROUP = Path("/sys/fs/cgroup")

# pause as the kubelet runs it: PID 1 of the namespace, reaps every orphan, nothing else.
PAUSE = r"""
import os, signal
open("/proc/self/comm", "w").write("pause")
def reap(*_):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
signal.signal(signal.SIGCHLD, reap)
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    signal.pause()
"""

# Workload shapes real batch jobs have, as Python scripts run as a container's init (after
# PRELUDE); each ends with an idle tail so that the init's last partial interval is idle.
PRELUDE = r"""
import os, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
def hold(mib):
    block = bytearray(mib * 1024 * 1024)
    block[::4096] = b"\1" * (len(block) // 4096)
    return block
def fork(work):
    pid = os.fork()
    if pid == 0:
        work()
        os._exit(0)
    return pid
def orphan(work):
    # The middle process exits at once: the grandchild is reparented to pause.
    os.waitpid(fork(lambda: fork(work)), 0)
"""

SHAPES = {
    "long_lived": "ballast = hold(160)\nburn(2.5)\ntime.sleep(0.5)\nburn(1.0)\ntime.sleep(0.6)\n",
    "short_children": (
        "ballast = hold(100)\n"
        "for _ in range(120):\n"
        "    os.waitpid(fork(lambda: burn(0.025)), 0)\n"
        "time.sleep(0.6)\n"
    ),
    "shared_workers": (
        "data = hold(200)\n"
        "def work():\n"
        "    end = time.process_time() + 1.0\n"
        "    while time.process_time() < end:\n"
        "        data.count(b'\\1')\n"
        "    time.sleep(1.0)\n"
        "workers = [fork(work) for _ in range(4)]\n"
        "for pid in workers:\n"
        "    os.waitpid(pid, 0)\n"
        "time.sleep(0.6)\n"
    ),
    "orphan": "ballast = hold(120)\norphan(lambda: burn(3.0))\nburn(0.5)\ntime.sleep(4.0)\n",
    "mix": (
        "ballast = hold(150)\n"
        "def work():\n"
        "    end = time.process_time() + 0.8\n"
        "    while time.process_time() < end:\n"
        "        ballast.count(b'\\1')\n"
        "    time.sleep(1.0)\n"
        "workers = [fork(work) for _ in range(2)]\n"
        "orphan(lambda: burn(0.8))\n"
        "for _ in range(40):\n"
        "    os.waitpid(fork(lambda: burn(0.025)), 0)\n"
        "for pid in workers:\n"
        "    os.waitpid(pid, 0)\n"
        "time.sleep(1.5)\n"
    ),
}


_names = itertools.count()


def available() -> str | None:
    """Why a pod cannot be simulated here, or None when it can."""
    if os.geteuid() != 0:
        return "simulating a pod needs root (pid and cgroup namespaces, cgroup directories)"
    for tool in ("unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"simulating a pod needs {tool} (util-linux)"
    if not _hierarchies():
        return "no writable cgroup hierarchy under /sys/fs/cgroup"
    return None


def _hierarchies() -> dict[str, Path]:
    """The cgroup mounts a container is placed in: v2 (alone or hybrid) and v1 cpuacct/memory."""
    found: dict[str, Path] = {}
    if (CGROUP / "cgroup.controllers").is_file():
        found["unified"] = CGROUP
    elif (CGROUP / "unified" / "cgroup.controllers").is_file():
        found["unified"] = CGROUP / "unified"
    for name in ("cpuacct", "cpu,cpuacct", "memory"):
        if (CGROUP / name / "cgroup.procs").is_file():
            found.setdefault("cpuacct" if "cpuacct" in name else name, CGROUP / name)
    return {key: path for key, path in found.items() if os.access(path, os.W_OK)}


class Container:
    """One container's cgroup in every hierarchy; the truth about what ran in it."""

    def __init__(self, pod: str, name: str) -> None:
        self.dirs = {key: base / pod / name for key, base in _hierarchies().items()}
        for directory in self.dirs.values():
            directory.mkdir(parents=True)
        self.peak_working_set = 0

    def join(self) -> None:
        """Move the calling process into this container's cgroups (before exec)."""
        for directory in self.dirs.values():
            (directory / "cgroup.procs").write_text("0")

    def cpu_seconds(self) -> float:
        """CPU used by every process that ever ran in the container, exited ones included."""
        if "unified" in self.dirs:
            for line in (self.dirs["unified"] / "cpu.stat").read_text().splitlines():
                key, value = line.split()
                if key == "usage_usec":
                    return int(value) / 1e6
        return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9

    def working_set(self) -> int:
        """Memory charged to the container less inactive page cache (what `kubectl top` shows)."""
        if "memory" in self.dirs:
            directory = self.dirs["memory"]
            usage = int((directory / "memory.usage_in_bytes").read_text())
            inactive_key = "total_inactive_file"
        else:
            directory = self.dirs["unified"]
            usage = int((directory / "memory.current").read_text())
            inactive_key = "inactive_file"
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        return usage - int(stat[inactive_key])

    def pids(self) -> list[int]:
        directory = next(iter(self.dirs.values()))
        return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]

    def remove(self) -> None:
        for directory in self.dirs.values():
            for pid in self._all_pids(directory):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        for directory in self.dirs.values():
            while directory.exists():
                try:
                    directory.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    @staticmethod
    def _all_pids(directory: Path) -> list[int]:
        try:
            return [int(pid) for pid in (directory / "cgroup.procs").read_text().split()]
        except OSError:
            return []


class Pod:
    """pause in a new pid namespace; containers are started into it with `start`."""

    def __init__(self) -> None:
        self.name = f"sentinel-test-pod-{os.getpid()}-{next(_names)}"
        self.containers: dict[str, Container] = {}
        self._processes: list[subprocess.Popen[bytes]] = []
        pause = self.container("pause")
        self._unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", sys.executable, "-c", PAUSE],
            preexec_fn=pause.join,
        )
        self._processes.append(self._unshare)
        self.pause_pid = _child_of(self._unshare.pid, timeout=10)
        _wait(lambda: Path(f"/proc/{self.pause_pid}/comm").read_text() == "pause\n", 10, "pause")
        self._sampler = threading.Thread(target=self._sample_working_sets, daemon=True)
        self._stopping = threading.Event()
        self._sampler.start()

    def container(self, name: str) -> Container:
        container = self.containers[name] = Container(self.name, name)
        return container

    def start(self, container: Container, argv: list[str], **popen: object) -> int:
        """Start `argv` as a container's init inside the pod; returns its pid on the host.

        nsenter forks the init into the namespace and waits for it, like the runtime's shim.
        """
        shim = subprocess.Popen(
            ["nsenter", "--target", str(self.pause_pid), "--pid", "--", *argv],
            preexec_fn=container.join,
            cwd=ROOT,
            **popen,  # type: ignore[call-overload]
        )
        self._processes.append(shim)
        self.last_shim = shim
        return _child_of(shim.pid, timeout=10)

    def start_sidecar(self, args: list[str], env: dict[str, str]) -> tuple[int, Path]:
        """The real CLI (`args`: `run ...`) in its own cgroup namespace with a private cgroup2
        mount and the pod's /proc; no --pid, no --cgroup. Returns its host pid and its log
        file."""
        sidecar = self.containers.get("sidecar") or self.container("sidecar")
        log = Path(f"/tmp/{self.name}-sidecar.log")
        script = (
            "mount -t proc proc /proc && mount -t cgroup2 none /sys/fs/cgroup && "
            f'exec "{sys.executable}" -m sentinel_sidecar "$@"'
        )
        with open(log, "wb") as output:
            pid = self.start(
                sidecar,
                ["unshare", "--cgroup", "--mount", "--propagation", "private", "sh", "-c",
                 script, "sidecar", *args],
                env={"TRACKER_CLOUD_DETECT": "false", **env},  # 127.0.0.1 only in tests
                stdout=output,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        return pid, log

    def _sample_working_sets(self) -> None:
        while not self._stopping.wait(0.02):
            for container in list(self.containers.values()):
                try:
                    ws = container.working_set()
                except (OSError, KeyError, ValueError):
                    continue
                container.peak_working_set = max(container.peak_working_set, ws)

    def close(self) -> None:
        self._stopping.set()
        self._sampler.join(5)
        for process in reversed(self._processes):
            if process.poll() is None:
                process.kill()
            process.wait(10)
        for container in self.containers.values():
            container.remove()
        for base in _hierarchies().values():
            pod_dir = base / self.name
            if pod_dir.exists():
                pod_dir.rmdir()


def _child_of(pid: int, timeout: float) -> int:
    """The (single) child of `pid` once it has exec'd its own program."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = psutil.Process(pid).children()
        except psutil.NoSuchProcess:
            children = []
        if children:
            return children[0].pid
        time.sleep(0.01)
    raise AssertionError(f"process {pid} started no child within {timeout} s")


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():  # type: ignore[operator]
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not ready within {timeout} s")
        time.sleep(0.01)
