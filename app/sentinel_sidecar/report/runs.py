"""`report`'s inputs: what one run left — an output directory, a spool directory or a direct-S3
run prefix — as its chunk files (local paths or `s3://` URIs, in the order of their numbers)
and its `run.json`, found without reading a row (`engine.py` reads them)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sentinel_sidecar.delivery.destination import RunSummary
from sentinel_sidecar.delivery.retry import CONNECT_TIMEOUT, READ_TIMEOUT
from sentinel_sidecar.delivery.s3 import parse_s3_uri
from sentinel_sidecar.report.figures import Figures, Measured
from sentinel_sidecar.spool.state import LEGACY_NAME_DIGITS, NAME_DIGITS, chunk_name
from sentinel_sidecar.spool.store import spool_files

EXPECTED = (
    "a local output directory (000001.csv.gz, ...), a spool directory (segment-*.csv) or a "
    "direct-S3 run prefix (s3://bucket/prefix/<run>)"
)
EXIT_OOM_KILLED = 137  # SIGKILL: what the kernel's OOM killer leaves as a container's exit code
NO_CREDENTIALS = (
    "no AWS credentials found (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
    "~/.aws, a web identity token); outside a pod the instance metadata service is not asked "
    "(AWS_EC2_METADATA_DISABLED=false asks it)"
)


S3_ATTEMPTS = 3  # per request to S3, for the listing, run.json and every chunk alike


class ReportError(Exception):
    """The input is not a delivered output, or a part of it is unreadable; one line."""


@dataclass(frozen=True)
class S3Access:
    """How `report` reaches S3: the instance metadata service asked for credentials or not
    (only in a pod or when told), and how long one request may go unanswered
    (`--s3-timeout`) before it is tried again, `S3_ATTEMPTS` times in all."""

    instance_metadata: bool = False
    timeout: float = READ_TIMEOUT

    def unanswered(self, what: str, error: object) -> ReportError:
        """The report's end when S3 stopped answering: one line naming what and the wait."""
        return ReportError(
            f"S3 did not answer for {what} ({S3_ATTEMPTS} attempts of {self.timeout:g} s; "
            f"--s3-timeout sets the wait): {error}"
        )


DEFAULT_ACCESS = S3Access()


@dataclass
class Run:
    """One run: where its rows are, its `run.json` when there is one, and what the engine
    measured in its rows once it has."""

    source: str
    files: list[str] = field(default_factory=list)  # chunks or segments, in the run's order
    summary: RunSummary | None = None
    measured: Measured | None = None

    @property
    def figures(self) -> Figures:
        """What the engine measured in its rows; none (zeros) before it has."""
        return self.measured.figures if self.measured else Figures()

    @property
    def oom_killed(self) -> bool:
        """Ended OOM-killed: exit code 137 or the pod's `OOMKilled` in its run.json, or an OOM
        kill in its cgroup (the extended schema's `cgroup_oom_kills`)."""
        summary = self.summary
        if summary is not None and (summary.exit_code == EXIT_OOM_KILLED or summary.oom_killed):
            return True
        return self.figures.oom_kills > 0


def load(source: str, *, access: S3Access = DEFAULT_ACCESS) -> Run:
    """One run from an output directory, a spool directory or an S3 run prefix (reached as
    `access` says)."""
    if source.startswith("s3://"):
        return _from_s3(source, access)
    directory = Path(source)
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is a file"
        raise ReportError(f"{directory} {what}; expected {EXPECTED}")
    if chunks := _chunks(directory):
        summary = directory / "run.json"
    elif chunks := spool_files(directory):
        summary = directory / "output" / "run.json"
    else:
        inside = [child for child in sorted(directory.iterdir()) if holds_a_run(child)]
        hint = f"; did you mean {inside[0]}?" if inside else ""
        raise ReportError(f"{directory} holds no chunk; expected {EXPECTED}{hint}")
    run = Run(str(directory), [str(path) for path in chunks])
    if summary.is_file():
        run.summary = _summary(summary.read_bytes(), str(summary))
    return run


def chunk_number(name: str) -> int | None:
    """The number of a chunk file `000001.csv.gz` (or an older run's `0001.csv.gz`)."""
    stem = name.removesuffix(".csv.gz")
    return int(stem) if stem != name and stem.isdigit() else None


def _chunks(directory: Path) -> list[Path]:
    """The chunk files in the order of their numbers, whatever their width."""
    numbered = [path for path in directory.glob("[0-9]*.csv.gz") if chunk_number(path.name)]
    return sorted(numbered, key=lambda path: chunk_number(path.name) or 0)


def holds_a_run(path: Path) -> bool:
    """A directory `report` can read (a run's output or spool)."""
    return path.is_dir() and bool(spool_files(path) or _chunks(path))


@functools.cache
def s3_session(access: S3Access) -> Any:
    """A botocore session on its credential chain, without the instance-metadata step unless
    asked (on a laptop that step waits on 169.254.169.254); ReportError without credentials.
    One per process: every input of a report and the engine share it."""
    import botocore.session

    session = botocore.session.get_session()
    if not access.instance_metadata:
        session.get_component("credential_provider").remove("iam-role")
    if session.get_credentials() is None:
        raise ReportError(NO_CREDENTIALS)
    return session


@functools.cache
def s3_client(access: S3Access) -> Any:
    """An S3 client on `s3_session`'s credentials (one per process, ~100 ms to build), each
    request waited for `access.timeout` at most and tried `S3_ATTEMPTS` times."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=min(CONNECT_TIMEOUT, access.timeout),
        read_timeout=access.timeout,
        retries={"mode": "standard", "max_attempts": S3_ATTEMPTS},
    )
    return boto3.session.Session(botocore_session=s3_session(access)).client("s3", config=config)


def transport_errors() -> tuple[type[Exception], ...]:
    """botocore's errors for a request S3 never answered (timeouts, connections refused,
    reset or closed), apart from S3's own answers."""
    from botocore.exceptions import ConnectionError, HTTPClientError

    return ConnectionError, HTTPClientError


def s3_keys(bucket: str, prefix: str, access: S3Access) -> set[str]:
    """The keys under `prefix`; none when listing is refused (an uploader's credentials may
    read objects without listing them: a run is then found by its chunks' names)."""
    from botocore.exceptions import ClientError

    pages = s3_client(access).get_paginator("list_objects_v2")
    try:
        return {item["Key"] for page in pages.paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])}  # fmt: skip
    except ClientError:
        return set()
    except transport_errors() as exc:
        raise access.unanswered(f"the listing of s3://{bucket}/{prefix}", exc) from exc


def _from_s3(uri: str, access: S3Access) -> Run:
    """The chunks and `run.json` under a run prefix: listed, or asked for by name (HEAD)
    when listing is refused."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        bucket, prefix = parse_s3_uri(uri)
    except ValueError as exc:
        raise ReportError(f"{exc}; expected {EXPECTED}") from exc
    base = f"{prefix}/" if prefix else ""
    listed = {key[len(base) :] for key in s3_keys(bucket, base, access)}
    if listed:
        return s3_run(bucket, base, listed, access)
    s3 = s3_client(access)

    def exists(name: str) -> bool:
        try:
            s3.head_object(Bucket=bucket, Key=base + name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                return False
            raise ReportError(f"s3://{bucket}/{base}{name}: {exc}") from exc
        except transport_errors() as exc:
            raise access.unanswered(f"s3://{bucket}/{base}{name}", exc) from exc
        except BotoCoreError as exc:
            raise ReportError(f"s3://{bucket}/{base}{name}: {exc}") from exc
        return True

    chunks: list[str] = []  # asked for by name: 6 digits wide (older runs wrote 4)
    for digits in (NAME_DIGITS, LEGACY_NAME_DIGITS):
        while exists(chunk_name(len(chunks) + 1, digits)):
            chunks.append(chunk_name(len(chunks) + 1, digits))
        if chunks:
            break
    named = {*chunks, *(["run.json"] if chunks and exists("run.json") else [])}
    return s3_run(bucket, base, named, access)


def s3_run(bucket: str, base: str, names: set[str], access: S3Access) -> Run:
    """The run under `s3://bucket/base` whose objects (names relative to `base`) are known:
    its chunks in the order of their numbers, and its `run.json` read when there is one."""
    from botocore.exceptions import BotoCoreError, ClientError

    uri = f"s3://{bucket}/{base}".rstrip("/")
    chunks = sorted((name for name in names if chunk_number(name)),
                    key=lambda name: chunk_number(name) or 0)  # fmt: skip
    if not chunks:
        raise ReportError(f"{uri} holds no chunk 000001.csv.gz; expected {EXPECTED}")
    run = Run(uri, [f"s3://{bucket}/{base}{name}" for name in chunks])
    if "run.json" in names:
        try:
            body = s3_client(access).get_object(Bucket=bucket, Key=f"{base}run.json")
            run.summary = _summary(body["Body"].read(), f"{uri}/run.json")
        except transport_errors() as exc:
            raise access.unanswered(f"{uri}/run.json", exc) from exc
        except (ClientError, BotoCoreError) as exc:
            raise ReportError(f"{uri}/run.json: {exc}") from exc
    return run


def _summary(body: bytes, where: str) -> RunSummary | None:
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ReportError(f"{where}: not JSON ({exc})") from exc
    return RunSummary.from_json(data) if isinstance(data, dict) else None
