"""What every destination does, and the run summary it closes a run with."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sentinel_sidecar.identity.record import ContainerResources, parse_resources

if TYPE_CHECKING:
    from sentinel_sidecar.spool.state import State
    from sentinel_sidecar.spool.store import Spool
    from sentinel_sidecar.telemetry import Telemetry


@dataclass(frozen=True, eq=False)
class DestinationStatus:
    """What `/readyz` and `/metrics` show of a destination."""

    ready: bool  # open: chunks can go (registered, credentials in hand)
    credentials_left: float | None = None  # seconds until the upload credentials expire


@dataclass(frozen=True, eq=False)
class RunSummary:
    """How a run ended: `run.json` in local and direct-S3 mode, the finish call for Sentinel."""

    run_id: str | None
    started_at: str  # ISO-8601 UTC
    finished_at: str
    schema: str
    rows: int
    chunks: int
    uris: tuple[str, ...]
    exit_code: int | None
    bytes_not_uploaded: int
    inline: bool  # the rows go with the close, not as chunks
    rows_merged: int = 0  # samples folded into a neighbouring row to keep the spool in its cap
    rows_dropped: int = 0  # samples given up to keep the spool in its cap
    rows_refused: int = 0  # rows of chunks the destination refused for good (`refused/`)
    oom_killed: bool = False  # the pod said the workload container was OOMKilled
    # {"value": ..., "source": "settings" | "pod" | "node" | "host" | ...} per field
    identity: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The workload container's requests and limits from its pod spec, where they were read.
    resources: ContainerResources = field(default_factory=ContainerResources)

    @property
    def run_status(self) -> str:
        """`failed` for a non-zero exit code, else `finished`."""
        return "failed" if self.exit_code else "finished"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        """A `run.json` read back (`report`): a field an older version did not write, or one
        of the wrong type, takes its default."""

        def count(name: str) -> int:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) else None

        code = data.get("exit_code")
        identity = data.get("identity")
        return cls(
            run_id=text("run_id"),
            started_at=text("started_at") or "",
            finished_at=text("finished_at") or "",
            schema=text("schema") or "sentinel",
            rows=count("rows"),
            chunks=count("chunks"),
            uris=tuple(str(uri) for uri in data.get("uris") or () if isinstance(uri, str)),
            exit_code=code if isinstance(code, int) and not isinstance(code, bool) else None,
            bytes_not_uploaded=count("bytes_not_uploaded"),
            inline=data.get("inline") is True,
            rows_merged=count("rows_merged"),
            rows_dropped=count("rows_dropped"),
            rows_refused=count("rows_refused"),
            oom_killed=data.get("oom_killed") is True,
            identity=identity if isinstance(identity, dict) else {},
            resources=parse_resources(data.get("resources")),
        )

    def to_json(self) -> bytes:
        """`run.json`."""
        data: dict[str, Any] = {**asdict(self), "uris": list(self.uris)}
        data["run_status"] = self.run_status
        return (json.dumps(data, indent=2) + "\n").encode()


class Destination(Protocol):
    """Where a run's chunks and its summary go. Every call does one attempt; the upload worker
    runs it through `deadline.Call` and stops waiting at its `deadline` (monotonic), which a
    destination may also use to cut its own timeouts (Sentinel does). Retries, backoff and the
    total budget are the policy's (`delivery/retry.py`)."""

    inline_max_bytes: int  # a run this small may go whole with `close` (0: never)

    @property
    def kept_bytes(self) -> int:
        """What it keeps on the spool's volume (local output there), within the spool's cap."""

    def open(self, state: State, deadline: float) -> State:
        """Register or resume the run; the state to save (run id, prefix). DeliveryError."""
        ...

    def put_chunk(self, name: str, body: bytes, deadline: float) -> str:
        """Store a chunk (a gzipped CSV) as `name` (the state's naming rule); its URI once it
        is durable. DeliveryError."""
        ...

    def close(self, summary: RunSummary, spool: Spool, deadline: float) -> str | None:
        """Write `run.json` or finish the run; where it now is, None when it stays open
        (logged with the reason). DeliveryError."""
        ...

    def status(self) -> DestinationStatus:
        """Ready or not, credential time left."""
        ...


@dataclass(frozen=True, eq=False)
class Wiring:
    """What a destination may be built with besides the settings."""

    new_run: bool  # no earlier state is resumed
    telemetry: Telemetry
    secret: Callable[..., None]  # told every secret value that arrives, so the log redacts it
    identity: Callable[[float], Mapping[str, Any]]  # the run's identity values, by a deadline
    run_name: str  # the pod's name (or the host's): direct S3 names the run after it


@dataclass(frozen=True, eq=False)
class DestinationKind:
    """A destination as the registry (`delivery/registry.py`) knows it: its mode name, its
    settings group (a `setting.py` group, composed into `config.Settings`), when the settings
    choose it, and how it is built. A new destination is one module declaring one of these
    plus its line in the registry and its group in `config.Settings`. `chosen` and `build` get
    the whole `config.Settings` (typed by each destination with a protocol of what it reads:
    delivery never imports config)."""

    name: str
    settings: type
    chosen: Callable[[Any], bool]
    build: Callable[[Any, Wiring], Destination]
    extended_schema: bool = True  # takes the extended columns (Sentinel takes its 32 only)
