"""What the agent has done so far, and what the workload used, for `/metrics` and `/readyz`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sentinel_sidecar.measure.usage import WorkloadUsage

SPOOL_UNWRITABLE = "spool_unwritable"
SPOOL_FULL = "spool_full"


@dataclass(eq=False)
class Telemetry:
    """Counters and times the sampler and the upload worker update; each field has one writer
    thread, the health server only reads."""

    rows_sampled: int = 0
    sample_failures: int = 0
    read_errors: int = 0
    # Why the last sample was not taken or not written (None: it was): SPOOL_UNWRITABLE, or
    # the exception's type when it could not be read.
    sample_failure: str | None = None
    chunks_uploaded: int = 0
    chunks_refused: int = 0  # refused for good and set aside (see delivery/retry.py)
    upload_failures: int = 0
    ingestion_errors: int = 0
    last_sample_monotonic: float | None = None
    last_upload_wall: float | None = None
    failing_since_monotonic: float | None = None
    spool_full: bool = False  # undelivered rows fill the spool's cap and are being merged
    rows_merged: int = 0
    rows_dropped: int = 0
    usage: WorkloadUsage = field(default_factory=WorkloadUsage)  # the spooled rows' totals
