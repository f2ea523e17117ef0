"""How the health endpoints judge the agent (`/healthz`, `/readyz`) and what `/metrics` reads:
the telemetry, the spool's backlog, the destination's state and the run's identity."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sentinel_sidecar.delivery.destination import DestinationStatus
from sentinel_sidecar.identity.record import Identity
from sentinel_sidecar.telemetry import SPOOL_FULL, SPOOL_UNWRITABLE, Telemetry

# Ready means uploads have not been failing for longer than this many upload intervals.
FAILING_INTERVALS = 3


@dataclass(frozen=True, eq=False)
class Probe:
    """What the endpoints judge by."""

    telemetry: Telemetry
    interval: float
    upload_interval: float
    pending_bytes: Callable[[], int]
    destination: Callable[[], DestinationStatus]
    identity: Callable[[], Identity | None] = lambda: None  # None until the probe is done
    monotonic: Callable[[], float] = time.monotonic

    def alive(self) -> bool:
        """The sampling loop took a sample recently (or is still starting)."""
        last = self.telemetry.last_sample_monotonic
        return last is None or self.monotonic() - last < 3 * self.interval + 10

    def ready(self) -> bool:
        """Nothing stands in the way of delivery."""
        return self.not_ready() is None

    def not_ready(self) -> str | None:
        """Why `/readyz` fails: rows cannot be written to the spool, the last sample could not
        be read, undelivered rows fill the spool's cap, the destination is not open
        (registered, where it needs that), or deliveries have been failing for long."""
        failure = self.telemetry.sample_failure
        if failure is not None:
            return SPOOL_UNWRITABLE if failure == SPOOL_UNWRITABLE else "sampling_failing"
        if self.telemetry.spool_full:
            return SPOOL_FULL
        if not self.destination().ready:
            return "destination_not_open"
        failing = self.telemetry.failing_since_monotonic
        if (
            failing is not None
            and self.monotonic() - failing >= FAILING_INTERVALS * self.upload_interval
        ):
            return "deliveries_failing"
        return None
