"""The report's engine: DuckDB (the `report` extra) reads each run's gzipped CSV chunks or
spool segments where they lie — local files, or S3 through the httpfs extension from its pip
package, so nothing is fetched at run time — in one streaming pass per run. What it keeps per
run is one row per distinct `process_cpu_usage` value (how often it occurred, and the sums and
extremes of the other columns in those rows), so a group's CPU percentile and every total are
exact while no row is held in Python and a fleet's rows are never in memory at once. A chunk
DuckDB cannot read is left out, named, and flagged on its run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sentinel_sidecar.report.figures import POINTS, Figures, Measured, Series
from sentinel_sidecar.report.recommend import percentile
from sentinel_sidecar.report.runs import ReportError, Run, s3_client, s3_session

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
HTTPFS_VERSION = "v1.5.5"  # the duckdb-extension-httpfs wheel's directory, pinned with duckdb
MISSING = (
    "report needs the report extra (DuckDB and its httpfs extension): "
    "pip install 'sentinel-sidecar[report]' (in a checkout: pip install -e '.[report]')"
)

_READ = """read_csv($files, header = true, auto_detect = false, columns = $types,
                    strict_mode = true, buffer_size = 1048576)"""
# Per run and distinct CPU value: its rows, and the sums and extremes of the other columns.
_COUNT = """
INSERT INTO counts
SELECT $run, cpu, count(cpu), count(*), count(*) FILTER (WHERE coalesce(cpu, 0) > 0 OR
       coalesce(mem, 0) > 0), min(ts), max(ts), sum(mem), max(mem), sum(gpu), max(gpu),
       max(gpus), sum(oom), sum(rd), sum(wr)
FROM (SELECT {select} FROM {read}) GROUP BY cpu
"""
_FIGURES = """
SELECT sum(rows)::BIGINT, sum(n)::BIGINT, sum(workload)::BIGINT, min(first), max(last),
       coalesce(sum(cpu * n), 0), coalesce(sum(mem), 0), coalesce(max(mem_peak), 0),
       coalesce(sum(gpu), 0), coalesce(max(gpu_peak), 0), coalesce(max(gpus), 0),
       coalesce(sum(oom), 0), coalesce(sum(rd), 0), coalesce(sum(wr), 0)
FROM counts WHERE run = $run
"""
_SERIES = """
SELECT floor((ts - $first) / $width) AS bucket, min(ts), max(cpu), max(mem), max(rd), max(wr),
       max(gpu)
FROM (SELECT {select} FROM {read}) WHERE ts IS NOT NULL GROUP BY bucket
"""


class Engine:
    """One DuckDB connection for a report: each run read once, groups summed from that."""

    def __init__(self, *, instance_metadata: bool = False) -> None:
        try:
            import duckdb
            import duckdb_extension_httpfs
        except ImportError as exc:
            raise ReportError(f"{MISSING} ({exc})") from exc
        self._error: type[Exception] = duckdb.Error
        # Nothing is fetched at run time: httpfs comes from its wheel, loaded by path.
        self._db = duckdb.connect(config={"autoinstall_known_extensions": False,
                                          "autoload_known_extensions": False})  # fmt: skip
        self._db.execute("SET enable_progress_bar = false")
        self._db.execute(
            "CREATE TEMP TABLE counts (run INTEGER, cpu DOUBLE, n BIGINT, rows BIGINT, "
            "workload BIGINT, first DOUBLE, last DOUBLE, mem DOUBLE, mem_peak DOUBLE, "
            "gpu DOUBLE, gpu_peak DOUBLE, gpus DOUBLE, oom DOUBLE, rd DOUBLE, wr DOUBLE)"
        )
        wheel = os.path.dirname(duckdb_extension_httpfs.__file__)
        self._httpfs = os.path.join(wheel, "extensions", HTTPFS_VERSION, "httpfs.duckdb_extension")
        self._instance_metadata = instance_metadata
        self._buckets: set[str] = set()
        self._runs = 0

    def measure(self, run: Run, *, series: bool = False) -> Measured:
        """Read `run`'s rows once: its figures and CPU counts (kept for `percentile`), and
        its chart series when `series`. A chunk that cannot be read is left out and named."""
        for uri in run.files:
            self._reach(uri)
        key = self._runs
        self._runs += 1
        header, skipped = self._header(run.files)
        read = [name for name in run.files if name not in skipped] if header else []
        for start in range(0, len(read), BATCH):
            skipped |= self._each(_COUNT, read[start : start + BATCH], header or [], run=key)
        row = self._db.execute(_FIGURES, {"run": key}).fetchone()
        figures = Figures(*row) if row and row[0] else Figures()
        why = tuple(f"{name}: {reason}" for name, reason in skipped.items())
        if not (series and figures.rows):
            return Measured(key, figures, why)
        kept = [name for name in read if name not in skipped]
        return Measured(key, figures, why, self._series(kept, header or [], figures))

    def percentile(self, keys: Sequence[int], percent: float) -> float:
        """The `percent` percentile (nearest rank) of process_cpu_usage over every row of the
        measured runs `keys`."""
        counts = self._db.execute(
            "SELECT cpu, sum(n)::BIGINT FROM counts WHERE list_contains($keys, run) AND n > 0 "
            "GROUP BY cpu ORDER BY cpu",
            {"keys": list(keys)},
        ).fetchall()
        return percentile(counts, percent)

    def _header(self, files: Sequence[str]) -> tuple[list[str] | None, dict[str, str]]:
        """The columns of the run's first readable chunk, and the chunks before it that could
        not be read, with why."""
        skipped: dict[str, str] = {}
        for name in files:
            try:
                row = self._db.execute(
                    "SELECT line FROM read_csv($file, header = false, auto_detect = false, "
                    "columns = {'line': 'VARCHAR'}, delim = '\x1f', quote = '', escape = '') "
                    "LIMIT 1",
                    {"file": name},
                ).fetchone()
            except self._error as exc:
                skipped[name] = _first_line(exc)
                continue
            header = str(row[0]).split(",") if row and row[0] else []
            if "timestamp" not in header:
                skipped[name] = "no CSV header with a timestamp column"
                continue
            return header, skipped
        return None, skipped

    def _each(
        self, query: str, files: Sequence[str], header: Sequence[str], **values: Any
    ) -> dict[str, str]:
        """`query` over `files` at once; when that fails, over each file alone, leaving out
        (and returning, with why) the files DuckDB cannot read."""
        types = {name: "DOUBLE" if name in COLUMNS else "VARCHAR" for name in header}
        select = ", ".join(
            f'"{name}" AS {short}' if name in header else f"NULL::DOUBLE AS {short}"
            for name, short in COLUMNS.items()
        )
        sql = query.format(select=select, read=_READ)
        try:
            self._db.execute(sql, {"files": list(files), "types": types, **values})
            return {}
        except self._error:
            if len(files) == 1:
                raise
        skipped = {}
        for name in files:
            try:
                self._db.execute(sql, {"files": [name], "types": types, **values})
            except self._error as exc:
                skipped[name] = _first_line(exc)
        return skipped

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
        self._buckets.add(bucket)
        client = s3_client(self._instance_metadata)
        keys = s3_session(self._instance_metadata).get_credentials().get_frozen_credentials()
        endpoint = urlsplit(client.meta.endpoint_url)
        aws = (endpoint.hostname or "").endswith((".amazonaws.com", ".amazonaws.com.cn"))
        options: dict[str, str | bool] = {
            "KEY_ID": keys.access_key,
            "SECRET": keys.secret_key,
            "SESSION_TOKEN": keys.token or "",
            "REGION": _bucket_region(client, bucket) or client.meta.region_name or "us-east-1",
            "SCOPE": f"s3://{bucket}",
        }
        if not aws:  # MinIO, Ceph, R2, s3rver, moto: path-style on the endpoint given
            options |= {"ENDPOINT": endpoint.netloc, "URL_STYLE": "path",
                        "USE_SSL": endpoint.scheme == "https"}  # fmt: skip
        fields = ", ".join(f"{name} {_literal(value)}" for name, value in options.items())
        self._db.execute(f"CREATE SECRET (TYPE s3, {fields})")


def _bucket_region(client: Any, bucket: str) -> str | None:
    """The bucket's region as S3 says it (HeadBucket), None when it does not."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        answer = client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        answer = exc.response
    except BotoCoreError:
        return None
    headers = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    region = headers.get("x-amz-bucket-region")
    return str(region) if region else None


def _literal(value: str | bool) -> str:
    """`value` as a SQL literal (CREATE SECRET takes no parameters)."""
    if isinstance(value, bool):
        return str(value).lower()
    return "'" + value.replace("'", "''") + "'"


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
