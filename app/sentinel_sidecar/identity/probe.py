"""What ran where: the run metadata, `host_*` and `cloud_*` facts sent when a run is registered
and kept in `run.json`. The first answer wins, and what the user set always wins: settings >
the pod and node objects of the Kubernetes API (`pod.py`) > the Downward API variables >
the cloud's metadata service (`cloud.py`) > the host (`host.py`). Nothing probed is ever fatal,
and the whole probe is bounded in time."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from sentinel_sidecar.config import Settings
from sentinel_sidecar.deadline import Call
from sentinel_sidecar.identity.cloud import metadata_services
from sentinel_sidecar.identity.host import HOST_IDENTITY, host_fields
from sentinel_sidecar.identity.kube import SERVICE_ACCOUNT_DIR
from sentinel_sidecar.identity.pod import downward_facts, kubernetes
from sentinel_sidecar.identity.record import Identity

log = structlog.get_logger(__name__)

PROBE_SECONDS = 2.0  # the whole probe: Kubernetes API and metadata services


def gather(
    settings: Settings,
    account_dir: Path = SERVICE_ACCOUNT_DIR,
    gpu_facts: Mapping[str, Any] | None = None,
) -> Identity:
    """Settings first, then the pod and node, then a metadata service (when the node told no
    cloud), then the host (and its GPUs, `gpu_facts`); each within PROBE_SECONDS in all."""
    started = time.monotonic()
    identity = Identity()
    identity.offer("settings", {**settings.metadata(), **settings.cloud()})
    kubernetes(identity, settings, account_dir, timeout=PROBE_SECONDS / 2)
    identity.offer("downward-api", downward_facts(settings.pod))
    if settings.cloud_detect and "cloud_vendor_id" not in identity.values:
        left = PROBE_SECONDS - (time.monotonic() - started)
        if left > 0:
            metadata_services(identity, settings.cloud_metadata_url, left)
    host: dict[str, object] = {**host_fields(settings.pod, settings.proc_root)}
    if not settings.send_host_identity:
        host = {name: value for name, value in host.items() if name not in HOST_IDENTITY}
    identity.offer("host", {**host, **(gpu_facts or {})})
    identity.offer("env", {"external_run_id": settings.pod.uid})
    log.info("identity", took_s=round(time.monotonic() - started, 2), **identity.described())
    return identity


class IdentityProbe:
    """`gather` in the background from the start: sampling never waits for it, and a register
    or run.json that needs it waits at most until its own deadline."""

    def __init__(self, settings: Settings, gpu_facts: Mapping[str, Any] | None = None) -> None:
        self._settings = settings
        self._call: Call[Identity] = Call(
            lambda: gather(settings, gpu_facts=gpu_facts), what="identity"
        )

    def known(self) -> Identity | None:
        """The identity when the probe is done (and did not fail), else None; never waits."""
        if self._call.running:
            return None
        try:
            return self._call.result()
        except Exception:  # result() logs why when it is asked for
            return None

    def result(self, timeout: float) -> Identity:
        """The identity, waiting up to `timeout` s; the settings alone (and the pod UID) when
        the probe failed or is not done by then."""
        if self._call.wait(timeout):
            try:
                return self._call.result()
            except Exception as exc:  # a probe must never cost the run
                log.warning("identity_probe_failed", error=str(exc))
        else:
            log.warning("identity_probe_late", waited_s=round(timeout, 1))
        identity = Identity()
        identity.offer("settings", {**self._settings.metadata(), **self._settings.cloud()})
        identity.offer("downward-api", downward_facts(self._settings.pod))
        identity.offer("env", {"external_run_id": self._settings.pod.uid})
        return identity
