import io
import json

import structlog

import sentinel_sidecar.log as log


def test_json_lines_with_event_name_and_secrets_redacted():
    stream = io.StringIO()
    log.configure("info", "json", stream)
    structlog.get_logger("t").info(
        "credentials_refreshed",
        run_id="r1",
        session_token="abc",
        credentials={"access_key": "AKIA", "expires_at": "2030"},
        authorization="Bearer x",
    )
    structlog.get_logger("t").debug("too_quiet")
    [line] = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "credentials_refreshed"
    assert event["level"] == "info"
    assert event["run_id"] == "r1"
    assert event["session_token"] == log.REDACTED
    assert event["credentials"] == log.REDACTED
    assert event["authorization"] == log.REDACTED
    assert "AKIA" not in line and "abc" not in line


def test_nested_secrets_are_redacted():
    stream = io.StringIO()
    log.configure("debug", "json", stream)
    structlog.get_logger("t").debug("response", body={"upload": {"secret_key": "s", "region": "r"}})
    event = json.loads(stream.getvalue())
    assert event["body"] == {"upload": {"secret_key": log.REDACTED, "region": "r"}}


def test_console_format_for_humans():
    stream = io.StringIO()
    log.configure("info", "console", stream)
    structlog.get_logger("t").info("run_started", spool="/tmp/x", token="t0k")
    text = stream.getvalue()
    assert "run_started" in text and "spool=/tmp/x" in text and "t0k" not in text


def test_secret_values_are_redacted_whatever_the_key():
    stream = io.StringIO()
    context = log.configure("info", "json", stream)
    context.secret("sntl_0123456789", None, "")
    try:
        raise ValueError("Invalid header value: 'Bearer sntl_0123456789\\n'")
    except ValueError:
        structlog.get_logger("t").exception("request_failed", error="HTTP 401: sntl_0123456789",
                                            nested={"list": ["x sntl_0123456789 y"]})  # fmt: skip
    text = stream.getvalue()
    assert "sntl_0123456789" not in text
    event = json.loads(text)
    assert event["error"] == f"HTTP 401: {log.REDACTED}"
    assert event["nested"] == {"list": [f"x {log.REDACTED} y"]}
    assert log.REDACTED in event["exception"]
