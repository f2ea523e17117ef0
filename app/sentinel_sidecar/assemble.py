"""The composition root: builds the agent's parts from the settings, so the runner only runs
them. A new source or destination is wired here (and in its registry), nowhere else."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from sentinel_sidecar.config import Settings
from sentinel_sidecar.delivery import registry
from sentinel_sidecar.delivery.destination import Destination, Wiring
from sentinel_sidecar.delivery.upload import Uploader, UploadWorker
from sentinel_sidecar.identity.probe import PROBE_SECONDS, IdentityProbe
from sentinel_sidecar.log import RunContext
from sentinel_sidecar.measure.cgroup import CgroupReader
from sentinel_sidecar.measure.collect import Collector
from sentinel_sidecar.measure.gpu import GpuReader
from sentinel_sidecar.measure.node import NodeReader
from sentinel_sidecar.measure.proc_reader import ProcReader
from sentinel_sidecar.measure.procfs import clock_ticks, raise_fd_limit
from sentinel_sidecar.measure.source import Source
from sentinel_sidecar.measure.values import ReadErrors
from sentinel_sidecar.spool.state import State, StateStore
from sentinel_sidecar.spool.store import Spool
from sentinel_sidecar.telemetry import Telemetry


def sources(errors: ReadErrors) -> list[Source]:
    """The sources read beside /proc and the cgroups, each tick."""
    return [GpuReader(errors)]  # NVML once; no GPU: its columns stay 0


def collector(
    settings: Settings,
    errors: ReadErrors,
    tick_sources: list[Source],
    *,
    wall_clock: Callable[[], float],
    monotonic: Callable[[], float],
) -> Collector:
    """The collector of the workload the settings name (or discovers); it closes its readers."""
    raise_fd_limit()  # a /proc file kept open per process and file
    ticks = clock_ticks()
    return Collector(
        ProcReader(settings.proc_root, errors=errors),
        NodeReader(settings.proc_root, ticks, errors=errors),
        CgroupReader(settings.cgroup_root, ticks),
        pid=settings.pid,
        cgroup=settings.cgroup,
        wall_clock=wall_clock,
        monotonic=monotonic,
        sources=tick_sources,
    )


def identity_probe(settings: Settings, tick_sources: list[Source]) -> IdentityProbe:
    """The background probe of the run's identity, with the GPU's host facts."""
    gpu = next(source for source in tick_sources if isinstance(source, GpuReader))
    return IdentityProbe(settings, gpu_facts=gpu.facts())


def destination(
    settings: Settings,
    *,
    new_run: bool,
    telemetry: Telemetry,
    context: RunContext,
    identity: IdentityProbe,
) -> Destination:
    """The destination the settings choose (`delivery/registry.py`); `new_run` when no earlier
    state is resumed. The run's identity waits for the identity probe, within the deadline."""

    def values(deadline: float) -> Mapping[str, Any]:
        wait = min(PROBE_SECONDS + 1.0, deadline - time.monotonic())
        return identity.result(max(0.0, wait)).values

    wiring = Wiring(
        new_run=new_run,
        telemetry=telemetry,
        secret=context.secret,
        identity=values,
        run_name=settings.pod.name or socket.gethostname(),
    )
    return registry.build(settings, wiring)


def upload(
    settings: Settings,
    spool: Spool,
    store: StateStore,
    state: State,
    target: Destination,
    *,
    telemetry: Telemetry,
    context: RunContext,
    wall_clock: Callable[[], float],
    monotonic: Callable[[], float],
) -> UploadWorker:
    """The upload worker (not started) and its uploader, on the settings' schedule."""
    uploader = Uploader(
        spool,
        store,
        state,
        target,
        max_chunk_bytes=settings.max_chunk_bytes,
        max_chunk_refusals=settings.max_chunk_refusals,
        telemetry=telemetry,
        monotonic=monotonic,
        wall_clock=wall_clock,
        context=context,
    )
    return UploadWorker(
        uploader,
        upload_interval=settings.upload_interval,
        threshold_bytes=settings.upload_threshold_bytes,
        monotonic=monotonic,
    )
