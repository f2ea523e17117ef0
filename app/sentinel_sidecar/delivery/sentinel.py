"""Sentinel mode, as the registry knows it: its settings, chosen by a token, and how it is built
(`sentinel_destination.py`: register the run on the API, upload with the short-lived
credentials it hands out, finish with the workload's exit code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from sentinel_sidecar.delivery.destination import Destination, DestinationKind, Wiring
from sentinel_sidecar.setting import PATH, SECRET, URL, number, setting, settings_group


@settings_group
class SentinelSettings:
    """Sentinel mode, chosen by a token (or a token file)."""

    TITLE: ClassVar[str] = "Sentinel mode"

    sentinel_api_url: str = setting(
        "https://api.sentinel.sparecores.net", URL, "Sentinel API base URL"
    )
    sentinel_api_token: str | None = setting(
        None, SECRET, "Sentinel API token (env or file only; never logged)", secret=True
    )
    sentinel_api_token_file: Path | None = setting(
        None, PATH, "file holding the token (a mounted Secret); read again after a 401"
    )
    inline_max_bytes: int = setting(
        1024 * 1024,
        number(int, 0, "a whole number of bytes >= 0"),
        "Sentinel mode: a run this small that never uploaded a chunk goes inline with the finish",
    )


def _chosen(settings: SentinelSettings) -> bool:
    return bool(settings.sentinel_api_token or settings.sentinel_api_token_file)


def _build(settings: Any, wiring: Wiring) -> Destination:
    # The destination, its API client and S3 signing load only in this mode: ~4 % of the
    # instructions of a start in local mode (docs/PERFORMANCE.md).
    from sentinel_sidecar.delivery import sentinel_destination

    return sentinel_destination.build(settings, wiring)


KIND = DestinationKind(
    "sentinel",
    SentinelSettings,
    _chosen,
    _build,
    extended_schema=False,
)
