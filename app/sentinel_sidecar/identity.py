"""What ran where: the run metadata and the `host_*` facts sent when a run is registered."""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Mapping
from typing import Any

import structlog

from sentinel_sidecar.config import Settings

log = structlog.get_logger(__name__)


def host_fields(environ: Mapping[str, str]) -> dict[str, Any]:
    """The `host_*` fields: pod/host name, node name, vCPUs, memory, CPU model. No probing;
    a fact that cannot be read is left out (a broken /proc must not stop the run)."""
    import psutil  # here, once per run: the sampling path does not need its ~1 MiB of imports

    try:
        vcpus: int | None = psutil.cpu_count(logical=True)
        memory_mib: int | None = round(psutil.virtual_memory().total / 1024 / 1024)
    except (OSError, ValueError, ArithmeticError, psutil.Error) as exc:
        log.warning("host_facts_unreadable", error=str(exc))
        vcpus = memory_mib = None
    return {
        "host_id": environ.get("NODE_NAME"),
        "host_hostname": environ.get("POD_NAME") or socket.gethostname(),
        "host_ip": environ.get("HOST_IP") or environ.get("POD_IP"),
        "host_vcpus": vcpus,
        "host_cpu_model": _cpu_model(),
        "host_memory_mib": memory_mib,
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def register_body(settings: Settings, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The flat `POST /runs` body: metadata, host and configured cloud fields; no nulls, no pid.

    `external_run_id` defaults to the pod's UID (`POD_UID` from the Downward API): a register
    retried after a lost answer may create a second run, and the UID tells them apart."""
    environ = os.environ if environ is None else environ
    body: dict[str, Any] = {**settings.metadata(), **host_fields(environ), **settings.cloud()}
    body.setdefault("external_run_id", environ.get("POD_UID"))
    return {key: value for key, value in body.items() if value is not None}


def run_name(environ: Mapping[str, str] | None = None) -> str:
    """The pod's name (Downward API `POD_NAME`), else the host name: names direct-S3 runs."""
    environ = os.environ if environ is None else environ
    return environ.get("POD_NAME") or socket.gethostname()
