"""Where a run goes: a local directory, the pod's own S3 bucket, or the Sentinel API. Each is a
`Destination`; the runner and the upload worker never ask which one they have."""

from __future__ import annotations

from collections.abc import Callable

from sentinel_sidecar.config import Mode, Settings
from sentinel_sidecar.delivery.destination import Destination
from sentinel_sidecar.delivery.local import LocalDestination
from sentinel_sidecar.delivery.s3 import S3Destination
from sentinel_sidecar.delivery.sentinel import SentinelDestination
from sentinel_sidecar.delivery.sentinel_api import SentinelClient
from sentinel_sidecar.identity import register_body, run_name
from sentinel_sidecar.telemetry import Telemetry


def destination_for(
    settings: Settings, *, new_run: bool, telemetry: Telemetry, secret: Callable[..., None]
) -> Destination:
    """The destination `settings.mode` names; `new_run` when no earlier state is resumed;
    `secret(*values)` is told every secret value that arrives (a token file, credentials)."""
    if settings.mode is Mode.SENTINEL:
        client = SentinelClient(
            settings.sentinel_api_url,
            settings.sentinel_api_token,
            settings.sentinel_api_token_file,
            secret=secret,
        )
        return SentinelDestination(
            client,
            register_body(settings),
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
    return LocalDestination(settings.local_output_dir, new_run=new_run)
