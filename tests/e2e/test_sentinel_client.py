import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

import sentinel_sidecar
from sentinel_sidecar.delivery.retry import (
    RETRY_AFTER_CAP,
    Backoff,
    DeliveryError,
    ErrorKind,
    retry_until,
)
from sentinel_sidecar.delivery.s3 import parse_s3_uri
from sentinel_sidecar.delivery.sentinel_api import (
    REJECTED_ANSWER_BACKOFF,
    Credentials,
    SentinelClient,
    SentinelError,
)
from sentinel_sidecar.delivery.sentinel_destination import SentinelDestination
from sentinel_sidecar.spool.state import State
from sentinel_sidecar.telemetry import Telemetry
from tests.support.peers import REGION, SENTINEL_HEADER

FAST = Backoff(base=0.05, ceiling=0.2)


def client(sentinel, token: str | None = None) -> SentinelClient:
    return SentinelClient(sentinel.url, token or sentinel.token)


def open_with_retries(sentinel, deadline: float, sleep=time.sleep) -> State:
    """Register a run through the destination on the retry policy's stop-time loop."""
    destination = SentinelDestination(
        client(sentinel), lambda _deadline: {}, api_url=sentinel.url, inline_max_bytes=0,
        region=REGION, endpoint_url=sentinel.proxy.endpoint, telemetry=Telemetry(),
    )  # fmt: skip
    state = State(run_id=None, upload_uri_prefix=None, seq=0, offset=0, header=SENTINEL_HEADER)
    return retry_until(lambda: destination.open(state, deadline), deadline, what="open",
                       backoff=FAST, sleep=sleep)  # fmt: skip


def soon(seconds: float = 10.0) -> float:
    return time.monotonic() + seconds


def test_register_refresh_finish_round_trip(sentinel):
    api = client(sentinel)
    registration = api.register_run({"project_name": "p"}, soon())
    assert registration.upload_uri_prefix == f"s3://{sentinel.bucket}/runs/{registration.run_id}"
    assert registration.credentials.seconds_left(time.monotonic()) > 3000
    fresh = api.refresh_credentials(registration.run_id, soon())
    assert fresh.session_token != registration.credentials.session_token
    csv = SENTINEL_HEADER + "\n" + ",".join(["1"] * 32) + "\n"
    processing = api.finish_run(registration.run_id, {"run_status": "finished",
                                "data_source": "inline", "data_csv": csv}, soon())  # fmt: skip
    assert sentinel.runs[registration.run_id].finishes
    assert (processing.status, processing.rows, processing.error) == ("completed", 1, None)
    assert sentinel.user_agents == {f"sentinel-sidecar/{sentinel_sidecar.__version__}"}


@pytest.mark.parametrize(
    "body",
    [
        {"run_status": "finished", "data_source": "s3", "data_uris": []},
        {"run_status": "finished", "data_source": "inline", "data_csv": "a,b\n1,2\n"},
        {"run_status": "finished", "data_source": "inline", "data_csv": "x", "pid": 1},
        {"run_status": "finished", "data_source": "s3", "data_uris": ["s3://elsewhere/0001.csv.gz"]},
        {"run_status": "done", "data_source": "inline", "data_csv": ""},
        {"run_status": "finished", "finished_at": "yesterday", "data_source": "inline",
         "data_csv": ""},
    ],
    ids=["empty-uris", "wrong-header", "unknown-field", "foreign-uri", "bad-status", "bad-time"],
)  # fmt: skip
def test_the_test_server_refuses_what_the_service_refuses(sentinel, body):
    api = client(sentinel)
    registration = api.register_run({}, soon())
    with pytest.raises(SentinelError) as refused:
        api.finish_run(registration.run_id, body, soon())
    assert refused.value.status == 422


@pytest.mark.parametrize(
    "body",
    [{"tags": "team=ml"}, {"tags": {"team": 1}}, {"command": "python x.py"}, {"pid": 1},
     {"host_vcpus": "2"}],
)  # fmt: skip
def test_the_test_server_refuses_bad_register_bodies(sentinel, body):
    with pytest.raises(SentinelError) as refused:
        client(sentinel).register_run(body, soon())
    assert refused.value.status == 422


def test_a_503_is_one_attempt_that_hands_its_status_up(sentinel):
    sentinel.unavailable_until = time.monotonic() + 60
    with pytest.raises(SentinelError) as caught:
        client(sentinel).register_run({}, soon())
    assert caught.value.status == 503
    assert len(sentinel.requests) == 1


def test_503_is_retried_until_it_clears(sentinel):
    sentinel.unavailable_until = time.monotonic() + 1.0
    assert open_with_retries(sentinel, soon(15)).run_id
    assert [status for _, status in sentinel.requests].count(503) >= 2


def test_429_honours_retry_after(sentinel):
    sentinel.unavailable_status, sentinel.retry_after = 429, "1"
    sentinel.unavailable_until = time.monotonic() + 0.5
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    open_with_retries(sentinel, soon(), sleep=sleep)
    assert slept and all(wait == 1.0 for wait in slept)


def test_a_long_retry_after_is_capped_and_handed_to_the_caller(sentinel):
    sentinel.unavailable_status, sentinel.retry_after = 429, "100000"
    sentinel.unavailable_until = time.monotonic() + 60
    slept: list[float] = []
    with pytest.raises(DeliveryError) as refused:
        open_with_retries(sentinel, soon(5), sleep=slept.append)
    assert slept == []  # not retried after 1, 2, 4 s against the server's word
    assert refused.value.retry_after == RETRY_AFTER_CAP


@pytest.mark.parametrize(
    "answer",
    [
        {"upload_uri_prefix": "s3://b/p", "upload_credentials": {}},
        {"run_id": "r1", "upload_uri_prefix": "https://b/p", "upload_credentials": {}},
        {"run_id": "r1", "upload_uri_prefix": "s3://b/p", "upload_credentials": None},
        {"run_id": "r1", "upload_uri_prefix": "s3://b/p", "upload_credentials": "x"},
    ],
    ids=["no-run-id", "bad-prefix", "null-credentials", "string-credentials"],
)
def test_an_unusable_register_answer_asks_for_a_long_wait(sentinel, answer):
    sentinel.register_answer = answer
    with pytest.raises(SentinelError) as refused:
        client(sentinel).register_run({}, soon())
    assert refused.value.retry_after == REJECTED_ANSWER_BACKOFF


def test_retries_stop_at_the_deadline(sentinel):
    sentinel.unavailable_until = time.monotonic() + 60
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="HTTP 503") as caught:
        open_with_retries(sentinel, soon(1.0))
    assert caught.value.kind is ErrorKind.TRANSIENT
    assert time.monotonic() - started < 2.0


def test_4xx_is_not_retried_and_carries_the_message(sentinel):
    with pytest.raises(SentinelError) as caught:
        client(sentinel).register_run({"pid": 1}, soon())
    assert caught.value.status == 422 and "pid" in str(caught.value)
    assert len(sentinel.requests) == 1


def test_a_refused_request_is_not_tried_again_by_the_policy(sentinel):
    sentinel.unavailable_status = 422
    sentinel.unavailable_until = time.monotonic() + 60
    with pytest.raises(DeliveryError) as caught:
        open_with_retries(sentinel, soon())
    assert caught.value.kind is ErrorKind.PERMANENT
    assert len(sentinel.requests) == 1


def test_401_without_a_token_file_is_final(sentinel):
    with pytest.raises(SentinelError) as caught:
        client(sentinel, token="wrong").register_run({}, soon())
    assert caught.value.status == 401
    assert len(sentinel.requests) == 1


def test_401_rereads_a_rotated_token_file(sentinel, tmp_path: Path):
    token_file = tmp_path / "token"
    token_file.write_text("stale\n")
    api = SentinelClient(sentinel.url, None, token_file)
    token_file.write_text(sentinel.token + "\n")  # the Secret was rotated
    assert api.register_run({}, soon()).run_id
    assert [status for _, status in sentinel.requests] == [401, 200]


def test_connection_refused_is_reported_with_no_status():
    api = SentinelClient("http://127.0.0.1:9", "t")
    with pytest.raises(SentinelError, match="ConnectionError") as caught:
        api.register_run({}, soon(0.5))
    assert caught.value.status is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("expires_at", "2030-01-02T03:04:05Z"), ("expiration", "2030-01-02T04:04:05+01:00"),
     ("expiration", "2030-01-02T03:04:05")],
)  # fmt: skip
def test_credentials_accept_expires_at_or_expiration(field, value):
    credentials = Credentials.from_api(
        {"access_key": "a", "secret_key": "s", "session_token": "t", field: value}
    )
    assert credentials.expires_at == datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_credentials_without_expiry_are_rejected():
    with pytest.raises(SentinelError, match="malformed"):
        Credentials.from_api({"access_key": "a", "secret_key": "s", "session_token": "t"})


@pytest.mark.parametrize(
    "uri",
    ["https://bucket/x", "s3://", "s3:///prefix", "s3://Bad_Bucket/x", "s3://bucket/a/../b",
     "s3://bucket/a//b"],
)  # fmt: skip
def test_bad_upload_prefixes_are_refused(uri):
    with pytest.raises(ValueError):
        parse_s3_uri(uri)


def test_good_upload_prefix():
    assert parse_s3_uri("s3://runs-1/a/b/") == ("runs-1", "a/b")
    assert parse_s3_uri("s3://runs-1") == ("runs-1", "")
