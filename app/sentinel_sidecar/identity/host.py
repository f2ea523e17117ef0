"""The host's own facts (`host_*`): names from the pod's environment, vCPUs, memory, CPU model
and storage as this container sees them. No network."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import structlog

if TYPE_CHECKING:
    from sentinel_sidecar.config import PodEnv

log = structlog.get_logger(__name__)

HOST_IDENTITY = ("host_id", "host_hostname", "host_ip")  # left out with send_host_identity false


class HostFacts(TypedDict, total=False):
    """The `host_*` fields of the register body that the host itself tells."""

    host_id: str | None
    host_hostname: str
    host_ip: str | None
    host_vcpus: int | None
    host_cpu_model: str | None
    host_memory_mib: int | None
    host_storage_gb: float | None
    host_server_allocation: str | None


def host_fields(pod: PodEnv, proc_root: Path = Path("/proc")) -> HostFacts:
    """The `host_*` fields: pod/host name, node name, vCPUs, memory, CPU model, storage. No
    probing; a fact that cannot be read is left out (a broken /proc must not stop the run)."""
    try:
        disk = os.statvfs("/")
        storage_gb: float | None = round(disk.f_blocks * disk.f_frsize / 1e9, 1)
    except OSError:
        storage_gb = None
    return {
        "host_id": pod.node_name,
        "host_hostname": pod.name or socket.gethostname(),
        "host_ip": pod.ip,
        "host_vcpus": os.cpu_count(),
        "host_cpu_model": _cpu_model(proc_root),
        "host_memory_mib": _memory_mib(proc_root),
        "host_storage_gb": storage_gb,
        # A pod shares its node with others unless something says otherwise.
        "host_server_allocation": "shared" if pod.in_pod else None,
    }


def _memory_mib(proc_root: Path) -> int | None:
    """`MemTotal` of `/proc/meminfo` (what psutil.virtual_memory().total reads), in MiB."""
    try:
        with open(proc_root / "meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemTotal:"):
                    return round(int(line.split()[1]) / 1024)
    except (OSError, ValueError, IndexError) as exc:
        log.warning("host_facts_unreadable", error=str(exc))
    return None


def _cpu_model(proc_root: Path) -> str | None:
    try:
        with open(proc_root / "cpuinfo", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform  # only here: it costs ~4 ms at start

    return platform.processor() or None
