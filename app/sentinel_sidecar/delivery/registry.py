"""The destinations the agent knows, in the order they are chosen: the first whose settings
are set wins (a token: Sentinel; else an S3 URI: direct S3; else a local directory). Each
declares its mode name, its settings group and how it is built (`DestinationKind`); the runner
and the upload worker never ask which one they have."""

from __future__ import annotations

from typing import Any

from sentinel_sidecar.delivery import local, s3, sentinel
from sentinel_sidecar.delivery.destination import Destination, DestinationKind, Wiring

DESTINATIONS: tuple[DestinationKind, ...] = (sentinel.KIND, s3.KIND, local.KIND)


def chosen(settings: Any) -> DestinationKind:
    """The destination `settings` (a `config.Settings`) choose."""
    return next(kind for kind in DESTINATIONS if kind.chosen(settings))


def build(settings: Any, wiring: Wiring) -> Destination:
    """The destination the settings choose, built."""
    return chosen(settings).build(settings, wiring)
