"""The report's engine: DuckDB (the `report` extra) reads each run's gzipped CSV chunks or
spool segments where they lie — local files, or S3 through the httpfs extension from its pip
package, so nothing is fetched at run time — in one streaming pass per run, a thousand chunks a
query. What it keeps of a run is one row of sums and extremes, and how many rows had each CPU
figure at the recommendation's resolution (10 millicores, rounded up: at most 100 values a
core), so no row is held in Python, a fleet's rows are never in memory at once, and a group's
CPU percentile gives exactly the request that the percentile of the raw figures would. A chunk
DuckDB cannot read is left out (one with rows that do not parse is read without them), named,
and flagged on its run; S3 not answering ends the report."""

from __future__ import annotations

import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sentinel_sidecar.report.figures import POINTS, Figures, Measured, Series
from sentinel_sidecar.report.runs import (
    DEFAULT_ACCESS,
    S3_ATTEMPTS,
    ReportError,
    Run,
    S3Access,
    s3_client,
    s3_session,
    transport_errors,
)

# The columns a report reads, by the short names the queries use; a run without one (the
# sentinel schema has no cgroup_oom_kills) reads it as empty.
COLUMNS = {
    "timestamp": "ts",
    "process_cpu_usage": "cpu",
    "process_memory_mib": "mem",
    "process_disk_read_bytes": "rd",
    "process_disk_write_bytes": "wr",
    "process_gpu_usage": "gpu",
    "process_gpu_utilized": "gpus",
    "cgroup_oom_kills": "oom",
}
BATCH = 1000  # chunks per query: DuckDB keeps some state per file until its query ends
MEMORY_LIMIT = "256MB"  # DuckDB's buffers; it keeps what it freed up to its limit
LEFT_OUT = "left out"  # a chunk not read at all (else: read without its broken rows)
HTTPFS_VERSION = "v1.5.5"  # the duckdb-extension-httpfs wheel's directory, pinned with duckdb
# httpfs's words for a request that got no answer ("Timeout was reached error for HTTP HEAD to
# '...'", "Could not connect to server error for HTTP GET to '...'"); S3's own answers are
# "HTTP Error: HTTP GET error on '...' (HTTP 404)".
_UNANSWERED = re.compile(r"error for HTTP [A-Z]+ to '")
MISSING = (
    "report needs the report extra (DuckDB and its httpfs extension): "
    "pip install 'sentinel-sidecar[report]' (in a checkout: pip install -e '.[report]')"
)

_READ = """read_csv($files, header = true, auto_detect = false, columns = $types,
                    strict_mode = true, ignore_errors = $lenient, buffer_size = 1048576)"""
# One row over all the rows (total = 1, in the order of Figures' fields), and one per CPU
# figure rounded up to 10 millicores (total = 0: the figure and how many rows had it).
_MEASURE = """
SELECT grouping(step) AS total, step, count(cpu), count(*),
       count(*) FILTER (WHERE coalesce(cpu, 0) > 0 OR coalesce(mem, 0) > 0), min(ts), max(ts),
       coalesce(sum(cpu), 0), coalesce(sum(mem), 0), coalesce(max(mem), 0),
       coalesce(sum(gpu), 0), coalesce(max(gpu), 0), coalesce(max(gpus), 0),
       coalesce(sum(oom), 0), coalesce(sum(rd), 0), coalesce(sum(wr), 0)
FROM (SELECT *, ceil(round(cpu * 1000, 6) / 10) / 100 AS step FROM (SELECT {select} FROM {read}))
GROUP BY GROUPING SETS ((), (step))
"""
_SERIES = """
SELECT floor((ts - $first) / $width) AS bucket, min(ts), max(cpu), max(mem), max(rd), max(wr),
       max(gpu)
FROM (SELECT {select} FROM {read}) WHERE ts IS NOT NULL GROUP BY bucket
"""


class Engine:
    """One DuckDB connection for a report: each run read once, groups summed from that."""

    def __init__(self, *, access: S3Access = DEFAULT_ACCESS) -> None:
        try:
            import duckdb
            import duckdb_extension_httpfs
        except ImportError as exc:
            raise ReportError(f"{MISSING} ({exc})") from exc
        self._error: type[Exception] = duckdb.Error
        self._spill = tempfile.TemporaryDirectory(prefix="sentinel-report-")
        self._db = duckdb.connect(config={
            "autoinstall_known_extensions": False, "autoload_known_extensions": False,
            "memory_limit": MEMORY_LIMIT, "temp_directory": self._spill.name,
        })  # fmt: skip
        self._db.execute("SET enable_progress_bar = false")
        # Nothing is fetched at run time: httpfs comes from its wheel, loaded by path.
        wheel = os.path.dirname(duckdb_extension_httpfs.__file__)
        self._httpfs = os.path.join(wheel, "extensions", HTTPFS_VERSION, "httpfs.duckdb_extension")
        self._access = access
        self._buckets: set[str] = set()

    def measure(self, run: Run, *, series: bool = False) -> Measured:
        """Read `run`'s rows once: its figures and CPU counts, and its chart series when
        `series`. A chunk that cannot be read is left out, or read in part, and named."""
        if run.files:
            self._reach(run.files[0])  # a run's chunks are all in one place
        header, troubles = self._header(run.files)
        read = [name for name in run.files if name not in troubles] if header else []
        figures, counts = Figures(), Counter[float]()
        for start in range(0, len(read), BATCH):
            rows, found = self._each(_MEASURE, read[start : start + BATCH], header or [])
            troubles |= found
            for total, step, *values in rows:
                if total:
                    figures = figures.merged(Figures(*values))
                elif values[0]:
                    counts[step] += values[0]
        why = tuple(f"{name}: {reason}" for name, reason in troubles.items())
        drawn = None
        if series and figures.rows:
            kept = [name for name in read if not troubles.get(name, "").startswith(LEFT_OUT)]
            drawn = self._series(kept, header or [], figures)
        return Measured(figures, dict(counts), why, drawn)

    def _header(self, files: Sequence[str]) -> tuple[list[str] | None, dict[str, str]]:
        """The columns of the run's first readable chunk, and the chunks before it that could
        not be read, with why."""
        troubles: dict[str, str] = {}
        for name in files:
            try:
                row = self._db.execute(
                    "SELECT line FROM read_csv($file, header = false, auto_detect = false, "
                    "columns = {'line': 'VARCHAR'}, delim = '\x1f', quote = '', escape = '') "
                    "LIMIT 1",
                    {"file": name},
                ).fetchone()
            except self._error as exc:
                self._answered(exc, name)
                troubles[name] = f"{LEFT_OUT} ({_first_line(exc)})"
                continue
            header = str(row[0]).split(",") if row and row[0] else []
            if "timestamp" not in header:
                troubles[name] = f"{LEFT_OUT} (no CSV header with a timestamp column)"
                continue
            return header, troubles
        return None, troubles

    def _each(
        self, query: str, files: Sequence[str], header: Sequence[str], **values: Any
    ) -> tuple[list[Any], dict[str, str]]:
        """`query`'s rows over `files` at once. When that fails, each file alone: one with rows
        that do not parse (a live spool's last row half written) is read without them; one
        DuckDB cannot read at all (not gzip, cut short) is left out; S3 not answering ends
        the report (ReportError), as going on would wait the same for every chunk. Returns
        the rows and, per file read in part or not at all, what happened."""
        types = {name: "DOUBLE" if name in COLUMNS else "VARCHAR" for name in header}
        select = ", ".join(
            f'"{name}" AS {short}' if name in header else f"NULL::DOUBLE AS {short}"
            for name, short in COLUMNS.items()
        )
        sql = query.format(select=select, read=_READ)

        def rows_of(names: Sequence[str], lenient: bool = False) -> list[Any]:
            given = {"files": list(names), "types": types, "lenient": lenient, **values}
            return self._db.execute(sql, given).fetchall()

        try:
            return rows_of(files), {}
        except self._error as exc:
            self._answered(exc, f"{files[0]} and the {len(files) - 1} chunk(s) after it")
        rows, troubles = [], {}
        for name in files:
            try:
                rows += rows_of([name])
                continue
            except self._error as exc:
                self._answered(exc, name)
                error = _first_line(exc)
            try:
                rows += rows_of([name], lenient=True)
                troubles[name] = f"read without the rows that do not parse ({error})"
            except self._error as exc:
                troubles[name] = f"{LEFT_OUT} ({_first_line(exc)})"
        return rows, troubles

    def _series(self, files: Sequence[str], header: Sequence[str], figures: Figures) -> Series:
        """Bucket maxima over time, POINTS buckets at most; disk as MB/s of the mean interval."""
        first = figures.first or 0.0
        width = max(figures.interval, figures.hours * 3600 / (POINTS - 1))
        self._db.execute("CREATE OR REPLACE TEMP TABLE buckets (bucket DOUBLE, ts DOUBLE, "
                         "cpu DOUBLE, mem DOUBLE, rd DOUBLE, wr DOUBLE, gpu DOUBLE)")  # fmt: skip
        insert = "INSERT INTO buckets " + _SERIES
        for start in range(0, len(files), BATCH):
            self._each(insert, files[start : start + BATCH], header, first=first, width=width)
        rows = self._db.execute(
            "SELECT (min(ts) - $first) / 60, max(cpu), max(mem), max(rd) / $mb, max(wr) / $mb, "
            "max(gpu) FROM buckets GROUP BY bucket ORDER BY bucket",
            {"first": first, "mb": figures.interval * 1e6},
        ).fetchall()
        self._db.execute("DROP TABLE buckets")
        return Series(*(list(column) for column in zip(*rows, strict=True)))

    def _reach(self, uri: str) -> None:
        """For an `s3://` URI: httpfs loaded and a secret for its bucket, made from the same
        credentials, region and endpoint boto3 uses (the bucket's own region when S3 says)."""
        if not uri.startswith("s3://"):
            return
        bucket = urlsplit(uri).netloc
        if bucket in self._buckets:
            return
        if not self._buckets:
            self._db.execute(f"LOAD '{self._httpfs}'")
            # Each request waited for as long as boto3's (whole seconds), tried as often.
            self._db.execute(f"SET http_timeout = {math.ceil(self._access.timeout)}")
            self._db.execute(f"SET http_retries = {S3_ATTEMPTS - 1}")
        self._buckets.add(bucket)
        client = s3_client(self._access)
        keys = s3_session(self._access).get_credentials().get_frozen_credentials()
        endpoint = urlsplit(client.meta.endpoint_url)
        aws = (endpoint.hostname or "").endswith((".amazonaws.com", ".amazonaws.com.cn"))
        options: dict[str, str | bool] = {
            "KEY_ID": keys.access_key,
            "SECRET": keys.secret_key,
            "SESSION_TOKEN": keys.token or "",
            "REGION": self._region(client, bucket) or client.meta.region_name or "us-east-1",
            "SCOPE": f"s3://{bucket}",
        }
        if not aws:  # MinIO, Ceph, R2, s3rver, moto: path-style on the endpoint given
            options |= {"ENDPOINT": endpoint.netloc, "URL_STYLE": "path",
                        "USE_SSL": endpoint.scheme == "https"}  # fmt: skip
        fields = ", ".join(f"{name} {_literal(value)}" for name, value in options.items())
        self._db.execute(f"CREATE SECRET (TYPE s3, {fields})")

    def _region(self, client: Any, bucket: str) -> str | None:
        """The bucket's region as S3 says it (HeadBucket), None when it does not."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            answer = client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            answer = exc.response
        except transport_errors() as exc:
            raise self._access.unanswered(f"s3://{bucket}", exc) from exc
        except BotoCoreError:
            return None
        headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        region = headers.get("x-amz-bucket-region")
        return str(region) if region else None

    def _answered(self, exc: Exception, what: str) -> None:
        """ReportError when `exc` is httpfs saying S3 gave no answer at all (a timeout, a
        connection refused or reset), not an answer or a chunk it could not read."""
        if _UNANSWERED.search(str(exc)):
            raise self._access.unanswered(what, _first_line(exc))


def _literal(value: str | bool) -> str:
    """`value` as a SQL literal (CREATE SECRET takes no parameters)."""
    if isinstance(value, bool):
        return str(value).lower()
    return "'" + value.replace("'", "''") + "'"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
