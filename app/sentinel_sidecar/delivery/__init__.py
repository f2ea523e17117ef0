"""Where a run goes: a local directory, the pod's own S3 bucket, or the Sentinel API. Each is a
`Destination`; the runner and the upload worker never ask which one they have."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sentinel_sidecar.config import LOCAL_FLOOR_SEGMENTS, Mode, Settings
from sentinel_sidecar.delivery.destination import Destination
from sentinel_sidecar.delivery.local import LocalDestination
from sentinel_sidecar.delivery.s3 import S3Destination
from sentinel_sidecar.delivery.sentinel import SentinelDestination
from sentinel_sidecar.delivery.sentinel_api import SentinelClient
from sentinel_sidecar.identity.probe import PROBE_SECONDS, IdentityProbe, register_body, run_name
from sentinel_sidecar.telemetry import Telemetry


def destination_for(
    settings: Settings,
    *,
    new_run: bool,
    telemetry: Telemetry,
    secret: Callable[..., None],
    identity: IdentityProbe,
) -> Destination:
    """The destination `settings.mode` names; `new_run` when no earlier state is resumed;
    `secret(*values)` is told every secret value that arrives (a token file, credentials);
    the register body comes from `identity` when the run is registered."""

    def body(deadline: float) -> dict[str, Any]:
        wait = min(PROBE_SECONDS + 1.0, deadline - time.monotonic())
        return register_body(identity.result(max(0.0, wait)))

    if settings.mode is Mode.SENTINEL:
        client = SentinelClient(
            settings.sentinel_api_url,
            settings.sentinel_api_token,
            settings.sentinel_api_token_file,
            secret=secret,
        )
        return SentinelDestination(
            client,
            body,
            api_url=settings.sentinel_api_url,
            inline_max_bytes=settings.inline_max_bytes,
            region=settings.aws_region,
            endpoint_url=settings.s3_endpoint_url,
            telemetry=telemetry,
            secret=secret,
        )
    if settings.mode is Mode.S3:
        assert settings.s3_uri is not None
        return S3Destination(
            settings.s3_uri,
            name=run_name(),
            region=settings.aws_region,
            endpoint_url=settings.s3_endpoint_url,
        )
    output = settings.local_output_dir
    on_spool_volume = output.resolve().is_relative_to(settings.spool_dir.resolve())
    # Output inside the spool directory shares its emptyDir: it counts against the cap, and
    # the spool keeps room for a few segments of its own.
    budget = settings.spool_max_bytes - LOCAL_FLOOR_SEGMENTS * settings.spool_segment_bytes
    return LocalDestination(output, new_run=new_run, budget=budget if on_spool_volume else None)
