"""`/metrics` through prometheus_client: the agent's own series (`sentinel_sidecar_*`, names
and meanings as before) and the workload's usage (`sentinel_workload_*`, the totals of the
rows the spool took: `measure/usage.py`), in the text format or OpenMetrics, whichever the
scraper's `Accept` asks for.

Imported on the first scrape, not at start: prometheus_client loads http.server, urllib and
ssl with it (~10 MiB of RSS and ~30 ms of CPU), which an agent nobody scrapes never needs."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from sentinel_sidecar.identity.record import amount, cpu_cores, memory_mib
from sentinel_sidecar.measure.values import MIB

if TYPE_CHECKING:
    from sentinel_sidecar.identity.record import Identity
    from sentinel_sidecar.measure.usage import WorkloadUsage
    from sentinel_sidecar.readiness import Probe

AGENT = "sentinel_sidecar_"
WORKLOAD = "sentinel_workload_"
# The run's identity on every workload series: few, and fixed for the agent's life.
LABELS = ("namespace", "pod", "job_name", "container_image")


def labels_of(identity: Identity | None) -> dict[str, str]:
    """The workload series' labels from the run's identity (empty where it is not known)."""
    values: Mapping[str, Any] = identity.values if identity is not None else {}
    tags = values.get("tags") or {}
    found = {
        "namespace": tags.get("namespace"),
        "pod": tags.get("pod"),
        "job_name": values.get("job_name"),
        "container_image": values.get("container_image"),
    }
    return {name: str(found[name] or "") for name in LABELS}


@dataclass(frozen=True)
class _Series:
    """One series of the agent: its name, type, help and where its value comes from."""

    name: str
    counter: bool
    help: str
    value: Callable[[Probe], float | None]


_AGENT_SERIES = (
    _Series("rows_sampled", True, "Rows appended to the spool.",
            lambda p: p.telemetry.rows_sampled),
    _Series("read_errors", True,
            "Kernel files that could not be read or parsed (their cells stay empty).",
            lambda p: p.telemetry.read_errors),
    _Series("sample_failures", True,
            "Samples not taken or not written (read error, spool unwritable).",
            lambda p: p.telemetry.sample_failures),
    _Series("rows_merged", True,
            "Samples folded into a neighbouring row to keep the spool in its cap (totals kept).",
            lambda p: p.telemetry.rows_merged),
    _Series("rows_dropped", True, "Samples given up to keep the spool in its cap.",
            lambda p: p.telemetry.rows_dropped),
    _Series("chunks_uploaded", True, "Chunks confirmed.",
            lambda p: p.telemetry.chunks_uploaded),
    _Series("chunks_refused", True,
            "Chunks refused for good by the destination and set aside in the spool's refused/.",
            lambda p: p.telemetry.chunks_refused),
    _Series("upload_failures", True, "Failed delivery attempts.",
            lambda p: p.telemetry.upload_failures),
    _Series("ingestion_errors", True,
            "Finished runs whose data Sentinel reported as not ingested.",
            lambda p: p.telemetry.ingestion_errors),
    _Series("pending_bytes", False, "Spooled bytes not yet uploaded.",
            lambda p: p.pending_bytes()),
    _Series("credentials_seconds_left", False, "Seconds until the upload credentials expire.",
            lambda p: p.destination().credentials_left),
    _Series("last_upload_timestamp_seconds", False, "UNIX time of the last confirmed upload.",
            lambda p: p.telemetry.last_upload_wall),
    _Series("ready", False, "1 when /readyz answers 200.", lambda p: int(p.ready())),
)  # fmt: skip

_WORKLOAD_TOTALS = (
    ("disk_read_bytes", "Bytes the workload's processes read from storage."),
    ("disk_write_bytes", "Bytes the workload's processes wrote to storage."),
    ("network_receive_bytes", "Bytes received in the network namespace the agent shares "
     "(the pod's)."),
    ("network_transmit_bytes", "Bytes sent in the network namespace the agent shares "
     "(the pod's)."),
)  # fmt: skip

# Gauges: the last row's level (GPU ones only once the workload used a GPU).
_Level = tuple[str, str, Callable[["WorkloadUsage"], float | None]]
_LEVELS: tuple[_Level, ...] = (
    ("memory_bytes", "Memory of the workload's processes (the CSV's process_memory_mib).",
     lambda u: u.memory_bytes),
    ("memory_peak_bytes", "Highest memory_bytes of the run so far.",
     lambda u: u.memory_peak_bytes),
    ("processes", "The workload's processes now.", lambda u: u.processes),
)  # fmt: skip
_GPU_LEVELS: tuple[_Level, ...] = (
    ("gpu_usage", "GPUs' worth of busy time of the workload's GPUs (1 = one GPU busy).",
     lambda u: u.gpu_usage),
    ("gpu_memory_bytes", "GPU memory the workload's processes use.",
     lambda u: u.gpu_memory_bytes),
    ("gpus", "GPUs the workload's processes use.", lambda u: u.gpus_utilized),
)  # fmt: skip

_RESOURCES = (
    ("cpu_request_cores", "requests", "cpu", cpu_cores),
    ("cpu_limit_cores", "limits", "cpu", cpu_cores),
    ("memory_request_bytes", "requests", "memory", lambda q: memory_mib(q) * MIB),
    ("memory_limit_bytes", "limits", "memory", lambda q: memory_mib(q) * MIB),
)


class _Collector(Collector):
    """Reads the probe at every scrape: nothing is kept between scrapes."""

    def __init__(self, probe: Probe) -> None:
        self._probe = probe

    def collect(self) -> Iterator[Metric]:
        probe = self._probe
        for series in _AGENT_SERIES:
            value = series.value(probe)
            if value is None:
                continue
            kind = CounterMetricFamily if series.counter else GaugeMetricFamily
            yield kind(AGENT + series.name, series.help, value=value)
        identity = probe.identity()
        labels = labels_of(identity)
        yield from _workload(probe.telemetry.usage, labels)
        if identity is not None:
            yield from _resources(identity, labels)


def _family(
    kind: type[CounterMetricFamily | GaugeMetricFamily],
    name: str,
    text: str,
    labels: dict[str, str],
    value: float | None,
) -> Iterator[Metric]:
    """One workload series with the run's labels; nothing when its value is not known."""
    if value is None:
        return
    metric = kind(WORKLOAD + name, text, labels=list(labels))
    metric.add_metric(list(labels.values()), value)
    yield metric


def _workload(usage: WorkloadUsage, labels: dict[str, str]) -> Iterator[Metric]:
    cpu = CounterMetricFamily(
        WORKLOAD + "cpu_seconds",
        "CPU time of the workload's processes (exited children included), by mode.",
        labels=[*labels, "mode"],
    )
    cpu.add_metric([*labels.values(), "user"], usage.totals["cpu_user_seconds"])
    cpu.add_metric([*labels.values(), "system"], usage.totals["cpu_system_seconds"])
    yield cpu
    for name, text in _WORKLOAD_TOTALS:
        yield from _family(CounterMetricFamily, name, text, labels, usage.totals[name])
    levels = _LEVELS + (_GPU_LEVELS if usage.gpus_used else ())
    for name, text, value in levels:
        yield from _family(GaugeMetricFamily, name, text, labels, value(usage))


def _resources(identity: Identity, labels: dict[str, str]) -> Iterator[Metric]:
    """The workload container's requests and limits, as its pod sets them."""
    for name, kind, resource, parse in _RESOURCES:
        quantity = amount(identity.resources, kind, resource)
        if quantity == "-":
            continue
        try:
            value = parse(quantity)
        except ValueError:
            continue  # a quantity written in a way this reader does not know: left out
        text = f"The workload container's {resource} {kind} (its pod spec)."
        yield from _family(GaugeMetricFamily, name, text, labels, value)


class Exposition:
    """One registry holding the probe's collector; `render` answers a scrape."""

    def __init__(self, probe: Probe) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_Collector(probe))

    def render(self, accept: str) -> tuple[bytes, str]:
        """The body and its content type for a scraper that sent `accept`."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self._registry), content_type
