"""Where chunks go: `DirSink` (a local directory, the embedded default) and `S3Sink` (boto3)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sentinel_sidecar.config import parse_s3_uri

if TYPE_CHECKING:
    from sentinel_sidecar.sentinel import Credentials

# S3 answers these when temporary credentials expired or were replaced; a refresh fixes them.
CREDENTIAL_ERRORS = frozenset(
    {"ExpiredToken", "InvalidToken", "InvalidAccessKeyId", "AccessDenied"}
)


class SinkError(Exception):
    """A chunk or the run summary could not be delivered; the cursor does not move."""


class CredentialsRejected(SinkError):
    """S3 refused the credentials (expired, replaced, or access denied)."""


class Sink(Protocol):
    """Delivers numbered chunks."""

    def put_chunk(self, seq: int, body: bytes) -> str:
        """Store chunk `seq` (gzipped CSV); return its URI once it is durable."""
        ...


def chunk_name(seq: int) -> str:
    """Object/file name of chunk `seq`: `0001.csv.gz`."""
    return f"{seq:04d}.csv.gz"


class DirSink:
    """Chunks as files `NNNN.csv.gz` in a directory, each written to a temp file and renamed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def has_output(self) -> bool:
        """True when the directory already holds chunks or a run summary."""
        return self.directory.is_dir() and any(self._outputs())

    def set_aside(self) -> str:
        """Move an earlier run's chunks and summary into `previous-<timestamp>/`."""
        aside = self.directory / time.strftime("previous-%Y%m%dT%H%M%S", time.gmtime())
        aside.mkdir()
        for path in self._outputs():
            path.rename(aside / path.name)
        return str(aside)

    def _outputs(self) -> list[Path]:
        return [*self.directory.glob("*.csv.gz"), *self.directory.glob("run.json")]

    def put_chunk(self, seq: int, body: bytes) -> str:
        """Write chunk `seq` durably; return its path."""
        return self._write(chunk_name(seq), body)

    def put_summary(self, summary: dict[str, Any]) -> str:
        """Write `run.json`; return its path."""
        return self._write("run.json", (json.dumps(summary, indent=2) + "\n").encode())

    def _write(self, name: str, body: bytes) -> str:
        target = self.directory / name
        tmp = self.directory / f".{name}.tmp"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as handle:
                handle.write(body)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            raise SinkError(f"cannot write {target}: {exc.strerror or exc}") from exc
        return str(target)


class S3Sink:
    """Chunks as objects `{prefix}/NNNN.csv.gz`; one boto3 client per credential set.

    Without explicit credentials boto3's default chain is used (IRSA, instance profile, env),
    which refreshes itself.
    """

    def __init__(
        self,
        uri: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
    ) -> None:
        self.bucket, self.prefix = parse_s3_uri(uri)
        self.uri = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        self._region = region
        self._endpoint_url = endpoint_url
        self._timeouts = (connect_timeout, read_timeout)
        self._credentials: Credentials | None = None
        self._client: Any = None

    def use_credentials(self, credentials: Credentials) -> None:
        """Switch to new temporary credentials (the client is rebuilt on next use)."""
        self._credentials = credentials
        self._client = None

    def _get_client(self) -> Any:
        if self._client is None:
            # Imported here: boto3 costs ~25 MiB and most of start-up, and local mode needs none.
            import boto3
            from botocore.config import Config

            connect, read = self._timeouts
            config = Config(
                connect_timeout=connect,
                read_timeout=read,
                retries={"mode": "standard", "max_attempts": 3},
                s3={"addressing_style": "path"} if self._endpoint_url else None,
            )
            credentials = self._credentials
            self._client = boto3.session.Session().client(
                "s3",
                region_name=(credentials.region if credentials else None) or self._region,
                endpoint_url=self._endpoint_url,
                aws_access_key_id=credentials.access_key if credentials else None,
                aws_secret_access_key=credentials.secret_key if credentials else None,
                aws_session_token=credentials.session_token if credentials else None,
                config=config,
            )
        return self._client

    def key(self, name: str) -> str:
        """The object key of `name` under the prefix."""
        return f"{self.prefix}/{name}" if self.prefix else name

    def put_chunk(self, seq: int, body: bytes) -> str:
        """Upload chunk `seq` (a gzipped CSV); return its `s3://` URI.

        Stored as `application/gzip` without `Content-Encoding`: with it, S3 clients unpack the
        object on download and the `.csv.gz` is no longer gzip."""
        return self._put(chunk_name(seq), body, "application/gzip")

    def put_summary(self, summary: dict[str, Any]) -> str:
        """Upload `run.json` next to the chunks."""
        body = (json.dumps(summary, indent=2) + "\n").encode()
        return self._put("run.json", body, "application/json")

    def _put(self, name: str, body: bytes, content_type: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = self.key(name)
        try:
            self._get_client().put_object(
                Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            error = CredentialsRejected if code in CREDENTIAL_ERRORS else SinkError
            raise error(f"put s3://{self.bucket}/{key}: {code}: {exc}") from exc
        except BotoCoreError as exc:
            raise SinkError(f"put s3://{self.bucket}/{key}: {exc}") from exc
        return f"s3://{self.bucket}/{key}"
