"""What the agent has done so far, for `/metrics` and `/readyz`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Telemetry:
    """Counters and times the sampler and the upload worker update; each field has one writer
    thread, the health server only reads."""

    rows_sampled: int = 0
    sample_failures: int = 0
    read_errors: int = 0
    spool_unwritable: bool = False
    sampling_failing: bool = False  # the last sample could not be read
    chunks_uploaded: int = 0
    upload_failures: int = 0
    ingestion_errors: int = 0
    last_sample_monotonic: float | None = None
    last_upload_wall: float | None = None
    failing_since_monotonic: float | None = None
