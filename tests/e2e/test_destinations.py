"""The `Destination` contract, one suite run against every destination behind its real peer:
local (a directory), direct S3 (moto with auth on) and Sentinel (the strict API server, its S3
in moto behind the proxy). A new destination joins by adding its case to `CASES`."""

from __future__ import annotations

import dataclasses
import gzip
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sentinel_sidecar.delivery.destination import Destination, RunSummary
from sentinel_sidecar.delivery.local import LocalDestination
from sentinel_sidecar.delivery.retry import DeliveryError
from sentinel_sidecar.delivery.s3 import S3Destination, parse_s3_uri
from sentinel_sidecar.delivery.sentinel_api import SentinelClient
from sentinel_sidecar.delivery.sentinel_destination import SentinelDestination
from sentinel_sidecar.measure.rows import Schema, header_line
from sentinel_sidecar.spool.state import State
from sentinel_sidecar.spool.store import Spool
from sentinel_sidecar.telemetry import Telemetry
from tests.support.peers import REGION, MotoServer, SentinelServer

HEADER = header_line(Schema.SENTINEL)


@dataclass
class Case:
    """A destination as its test builds it, and how to read back what it stored."""

    make: Callable[[bool], Destination]  # resumed: an agent restarted on the saved state
    read: Callable[[str], bytes]  # the bytes stored at a URI put_chunk returned
    registrations: Callable[[], int] = lambda: 0  # runs the peer created (Sentinel)


def local_case(tmp_path: Path) -> Case:
    output = tmp_path / "output"
    return Case(lambda resumed: LocalDestination(output, new_run=not resumed),
                lambda uri: Path(uri).read_bytes())  # fmt: skip


def s3_case(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Case:
    bucket = moto.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto.user["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto.user["aws_secret_access_key"])
    client = moto.client("s3")

    def read(uri: str) -> bytes:
        name, key = parse_s3_uri(uri)
        return bytes(client.get_object(Bucket=name, Key=key)["Body"].read())

    return Case(lambda resumed: S3Destination(f"s3://{bucket}/direct", name="pod-1",
                                              identity=lambda deadline: {"job_name": "train"},
                                              region=REGION, endpoint_url=moto.endpoint),
                read)  # fmt: skip


def sentinel_case(moto: MotoServer, sentinel: SentinelServer) -> Case:
    client = moto.client("s3")

    def make(resumed: bool) -> Destination:
        return SentinelDestination(
            SentinelClient(sentinel.url, sentinel.token), lambda deadline: {"job_name": "c"},
            api_url=sentinel.url, inline_max_bytes=1 << 20, region=REGION,
            endpoint_url=sentinel.proxy.endpoint, telemetry=Telemetry(),
        )  # fmt: skip

    def read(uri: str) -> bytes:
        name, key = parse_s3_uri(uri)
        return bytes(client.get_object(Bucket=name, Key=key)["Body"].read())

    return Case(make, read, sentinel.registrations)


CASES = ["local", "s3", "sentinel"]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch) -> Iterator[Case]:
    if request.param == "local":
        yield local_case(tmp_path)
    elif request.param == "s3":
        yield s3_case(request.getfixturevalue("moto"), monkeypatch)
    else:
        yield sentinel_case(request.getfixturevalue("moto"), request.getfixturevalue("sentinel"))


def soon() -> float:
    return time.monotonic() + 20


def fresh_state() -> State:
    return State(run_id=None, upload_uri_prefix=None, seq=0, offset=0, header=HEADER,
                 started_at=time.time())  # fmt: skip


def chunk(*rows: str) -> bytes:
    return gzip.compress((HEADER + "".join(f"{row}\n" for row in rows)).encode(), mtime=0)


def summary(uris: tuple[str, ...], rows: int) -> RunSummary:
    return RunSummary(run_id=None, started_at="2026-12-02T00:00:00+00:00",
                      finished_at="2026-12-02T00:01:00+00:00", schema="sentinel", rows=rows,
                      chunks=len(uris), uris=uris, exit_code=0, bytes_not_uploaded=0,
                      inline=False)  # fmt: skip


def test_a_chunk_is_refused_before_open_and_nothing_is_stored(case: Case):
    destination = case.make(False)
    assert not destination.status().ready
    with pytest.raises(DeliveryError):
        destination.put_chunk("000001.csv.gz", chunk("a"), soon())


def test_chunks_are_stored_under_their_names_and_read_back_unchanged(case: Case):
    destination = case.make(False)
    state = destination.open(fresh_state(), soon())
    assert destination.status().ready
    bodies = [chunk("1,a"), chunk("2,b", "3,c")]
    uris = [
        destination.put_chunk(state.chunk_name(seq), body, soon())
        for seq, body in enumerate(bodies, start=1)
    ]
    assert [uri.rpartition("/")[2] for uri in uris] == ["000001.csv.gz", "000002.csv.gz"]
    assert len({uri.rpartition("/")[0] for uri in uris}) == 1  # one run, one place
    assert [case.read(uri) for uri in uris] == bodies
    assert isinstance(destination.inline_max_bytes, int) and destination.kept_bytes >= 0


def test_a_chunk_sent_again_lands_in_the_same_place_with_the_same_bytes(case: Case):
    # An attempt abandoned at its deadline may land after the retry: both store one object.
    destination = case.make(False)
    state = destination.open(fresh_state(), soon())
    body = chunk("1,a")
    first = destination.put_chunk(state.chunk_name(1), body, soon())
    again = destination.put_chunk(state.chunk_name(1), body, soon())
    assert first == again and case.read(again) == body


def test_close_says_where_the_run_now_is(case: Case, tmp_path: Path):
    destination = case.make(False)
    state = destination.open(fresh_state(), soon())
    uri = destination.put_chunk(state.chunk_name(1), chunk("1,a"), soon())
    spool = Spool(tmp_path / "spool", HEADER)
    try:
        where = destination.close(summary((uri,), 1), spool, soon())
    finally:
        spool.close()
    assert where


def test_a_resumed_run_goes_on_in_the_same_place_without_a_second_run(case: Case):
    first = case.make(False)
    state = first.open(fresh_state(), soon())
    uri = first.put_chunk(state.chunk_name(1), chunk("1,a"), soon())
    resumed_state = dataclasses.replace(state, seq=1)
    second = case.make(True)  # a restarted agent, the saved state in hand
    again = second.open(resumed_state, soon())
    assert (again.run_id, again.upload_uri_prefix) == (state.run_id, state.upload_uri_prefix)
    next_uri = second.put_chunk(again.chunk_name(2), chunk("2,b"), soon())
    assert next_uri.rpartition("/")[0] == uri.rpartition("/")[0]
    assert case.registrations() <= 1


def test_direct_s3_runs_land_in_hive_partitions_and_older_runs_resume_where_they_were(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
):
    case = s3_case(moto, monkeypatch)
    state = case.make(False).open(fresh_state(), soon())
    assert state.upload_uri_prefix is not None
    assert re.search(r"/direct/job=train/run=pod-1-\d{8}T\d{6}Z$", state.upload_uri_prefix)
    # A run an earlier version started (`{uri}/{run_id}`) goes on under its own prefix.
    older = dataclasses.replace(state, upload_uri_prefix=state.upload_uri_prefix.split("/job=")[0]
                                + f"/{state.run_id}")  # fmt: skip
    destination = case.make(True)
    resumed = destination.open(older, soon())
    assert resumed.upload_uri_prefix == older.upload_uri_prefix
    uri = destination.put_chunk(resumed.chunk_name(1), chunk("1,a"), soon())
    assert uri == f"{older.upload_uri_prefix}/{resumed.chunk_name(1)}"
