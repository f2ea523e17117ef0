import argparse
import json
import os
from pathlib import Path

import pytest

from sentinel_sidecar.cli import main
from sentinel_sidecar.config import (
    FIELDS,
    SECRET_FIELDS,
    ConfigError,
    Settings,
    add_flags,
    env_name,
    load,
    settings_table,
    unknown_settings,
)
from sentinel_sidecar.delivery.local import output_dir


def settings_from(argv: list[str], environ: dict[str, str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return load(parser.parse_args(argv), environ)


def test_defaults():
    settings = settings_from([], {})
    assert settings.interval == 1.0
    assert settings.spool_dir == Path("/var/lib/sentinel-sidecar")
    assert output_dir(settings) == Path("/var/lib/sentinel-sidecar/output")
    assert settings.schema == "sentinel"
    assert settings.log_format == "json"


def test_precedence_defaults_yaml_env_flags(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("interval: 2\nupload_interval: 30\nschema: extended\nproject_name: yaml\n")
    environ = {
        "TRACKER_CONFIG": str(config),
        "TRACKER_UPLOAD_INTERVAL": "20",
        "TRACKER_PROJECT_NAME": "env",
    }
    settings = settings_from(["--project-name", "flag"], environ)
    assert settings.interval == 2.0  # yaml over default
    assert settings.upload_interval == 20.0  # env over yaml
    assert settings.schema == "extended"
    assert settings.project_name == "flag"  # flag over env
    assert settings.metadata() == {"project_name": "flag"}


def test_token_comes_from_env_and_is_not_in_repr():
    settings = settings_from([], {"SENTINEL_API_TOKEN": "s3cr3t"})
    assert settings.sentinel_api_token == "s3cr3t"
    assert "s3cr3t" not in repr(settings)


def run_cli(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch, environ=None
) -> tuple[int, str]:
    for key in list(os.environ):
        if key.startswith("TRACKER_"):
            monkeypatch.delenv(key)
    for key, value in (environ or {}).items():
        monkeypatch.setenv(key, value)
    code = main(argv)
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("interval: fast\n", "interval (config file"),
        ("interval: -1\n", "-1 is not allowed; expected a number of seconds >= 0.001"),
        ("- interval\n- 1\n", "must be a mapping of setting: value, got list"),
        ("interval: [1\n", "not valid YAML"),
        ("schema: csv\n", "'csv' is not allowed; expected one of sentinel, extended"),
        ("max_chunk_bytes: 1.5\n", "expected a whole number of bytes >= 1"),
        ("log_format: true\n", "True is not allowed"),
    ],
)
def test_bad_yaml_exits_2_with_a_one_line_message(
    tmp_path: Path, capsys, monkeypatch, yaml_text, expected
):
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    code, err = run_cli(["run", "--config", str(config)], capsys, monkeypatch)
    assert code == 2
    assert expected in err
    assert len(err.splitlines()) == 1


def test_unreadable_config_file_exits_2(tmp_path: Path, capsys, monkeypatch):
    code, err = run_cli(["run", "--config", str(tmp_path / "missing.yaml")], capsys, monkeypatch)
    assert code == 2
    assert "missing.yaml: cannot be read" in err


def test_config_path_from_env(tmp_path: Path, capsys, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text("interval: 0\n")
    code, err = run_cli(["run"], capsys, monkeypatch, {"TRACKER_CONFIG": str(config)})
    assert code == 2
    assert "interval" in err and "): 0 is not allowed" in err


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["run", "--interval", "-5"], {}, "interval (flag --interval): '-5' is not allowed"),
        (["run", "--interval", "nan"], {}, "'nan' is not allowed"),
        (["run"], {"TRACKER_INTERVAL": "abc"}, "interval (env TRACKER_INTERVAL): 'abc'"),
        (["run", "--health-port", "70000"], {}, "expected a port number 0-65535"),
        (["run", "--pid", "0"], {}, "expected a process id >= 1"),
        (["run"], {"TRACKER_LOG_LEVEL": "loud"}, "one of debug, info, warning, error"),
        (["run"], {"TRACKER_S3_URI": "s3://b/../x"}, "expected an s3://bucket/prefix URI"),
        (["run"], {"TRACKER_TAGS": "team"}, "tags (env TRACKER_TAGS): 'team' is not allowed"),
        (["run"], {"TRACKER_TAGS": '{"team": ["a"]}'}, "expected k=v,k2=v2 or a JSON object"),
        (["run"], {"TRACKER_TAGS": "=ml"}, "tags (env TRACKER_TAGS)"),
        (["run"], {"TRACKER_COMMAND": "python 'train.py"}, "command (env TRACKER_COMMAND)"),
        (["run", "--spool-max-bytes", "1000"], {}, "expected a whole number of bytes >= 32768"),
        (["run", "--spool-segment-bytes", "1mb"], {}, "spool_segment_bytes (flag"),
        (["run", "--spool-max-bytes", "4194304"], {},
         "spool_max_bytes: 4194304 is not allowed; expected >= 8 x spool_segment_bytes (2097152)"),
    ],
)  # fmt: skip
def test_bad_flags_and_env_exit_2(capsys, monkeypatch, argv, environ, expected):
    code, err = run_cli(argv, capsys, monkeypatch, environ)
    assert code == 2
    assert expected in err


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("team=ml", {"team": "ml"}),
        (" team = ml , stage=train,", {"team": "ml", "stage": "train"}),
        ("url=a=b", {"url": "a=b"}),
        ('{"team": "ml", "gpus": 4}', {"team": "ml", "gpus": "4"}),
    ],
)
def test_tags_are_key_value_pairs(raw: str, expected: dict[str, str]):
    assert settings_from([], {"TRACKER_TAGS": raw}).tags == expected


def test_tags_and_command_from_yaml(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("tags:\n  team: ml\n  gpus: 4\ncommand: [python, train.py]\n")
    settings = settings_from(["--config", str(config)], {})
    assert settings.tags == {"team": "ml", "gpus": "4"}
    assert settings.command == '["python", "train.py"]'


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("python train.py --lr 0.1", ["python", "train.py", "--lr", "0.1"]),
        ('["python","x y.py"]', ["python", "x y.py"]),
        ("sh -c 'a && b'", ["sh", "-c", "a && b"]),
    ],
)
def test_command_becomes_a_json_array_string(raw: str, expected: list[str]):
    assert json.loads(settings_from([], {"TRACKER_COMMAND": raw}).command or "") == expected


def test_empty_yaml_file_is_all_defaults(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("# nothing set\n")
    assert settings_from(["--config", str(config)], {}) == Settings(cloud_detect=False)


def test_secret_value_is_not_echoed_in_errors(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("sentinel_api_token: [hunter2]\n")
    with pytest.raises(ConfigError) as caught:
        settings_from(["--config", str(config)], {})
    assert "hunter2" not in str(caught.value)


def test_a_token_is_stripped_and_one_with_spaces_inside_is_refused():
    assert settings_from([], {"SENTINEL_API_TOKEN": " sntl_abc\n"}).sentinel_api_token == "sntl_abc"
    with pytest.raises(ConfigError, match="sentinel_api_token") as refused:
        settings_from([], {"SENTINEL_API_TOKEN": "sntl abc"})
    assert "sntl" not in str(refused.value)  # the error never shows the token


def test_the_documented_settings_table_is_the_one_the_declarations_make():
    readme = (Path(__file__).resolve().parent.parent.parent / "docs" / "settings.md").read_text()
    start = readme.index("<!-- settings-table")
    table = readme[readme.index("\n", start) + 1 : readme.index("<!-- /settings-table -->")]
    assert table == settings_table(), "regenerate the table: see the comment above it"


def test_help_shows_help_default_and_env_of_every_setting(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "--interval FLOAT seconds between samples (> 0) [default: 1; env TRACKER_INTERVAL]" in text
    )
    for field in FIELDS:
        if field not in SECRET_FIELDS:
            assert f"env {env_name(field)}]" in text, field


def test_unknown_variables_and_yaml_keys_name_the_closest_setting(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("interval: 2\nupload_intervall: 5\n")
    environ = {"TRACKER_SPOOL_DIRR": "/x", "SENTINEL_API_TOKN": "t", "TRACKER_PID": "1"}
    warnings = unknown_settings(environ, config)
    assert any("TRACKER_SPOOL_DIRR" in w and "TRACKER_SPOOL_DIR?" in w for w in warnings)
    assert any("SENTINEL_API_TOKN" in w and "SENTINEL_API_TOKEN?" in w for w in warnings)
    assert any("'upload_intervall'" in w and "upload_interval?" in w for w in warnings)
    assert len(warnings) == 3
    assert settings_from(["--config", str(config)], {}).interval == 2.0  # the rest still applies


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["run", "--pid", "999999999"], {}, "pid (--pid, TRACKER_PID): no process 999999999"),
        (["run", "--pid", "1", "--cgroup", "/x"], {}, "give one of them, not both"),
        (["run", "--cgroup", "/no/such/cgroup"], {}, "cgroup (--cgroup, TRACKER_CGROUP): no"),
        (["run"], {"SENTINEL_API_URL": "api.example.com"}, "expected an http:// or https:// URL"),
        (["demo", "--seconds", "0"], {}, "demo --seconds: 0 is not allowed"),
        (["demo", "--seconds", "-3"], {}, "demo --seconds: -3 is not allowed"),
        (["demo", "--dir", "/proc/version/x"], {}, "demo --dir /proc/version/x: cannot be used"),
    ],
    ids=["pid-gone", "pid-and-cgroup", "cgroup-gone", "url-without-scheme", "demo-0-s",
         "demo-negative", "demo-dir-unwritable"],
)  # fmt: skip
def test_bad_input_exits_2_naming_the_setting(capsys, monkeypatch, argv, environ, expected):
    code, err = run_cli(argv, capsys, monkeypatch, environ)
    assert code == 2
    assert expected in err and len(err.splitlines()) == 1


def _chunk(path: Path, body: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda d: d / "missing", "does not exist; expected a local output directory"),
        (lambda d: _chunk(d / "file", b"x"), "is a file; expected a local output directory"),
        (lambda d: _chunk(d / "spool" / "metrics.csv", b"a\n").parent, "no CSV header"),
        (lambda d: _chunk(d / "out" / "000001.csv.gz", b"no gzip").parent,
         "000001.csv.gz: left out (IO Error: Input is not a GZIP stream"),
        (lambda d: _chunk(d / "empty" / "run.json", b"{}").parent, "holds no chunk"),
    ],
    ids=["missing", "file", "spool-without-header", "corrupt-chunk", "no-chunks"],
)  # fmt: skip
def test_report_on_what_is_not_an_output_exits_2(tmp_path: Path, capsys, monkeypatch, make,
                                                  expected):  # fmt: skip
    code, err = run_cli(["report", str(make(tmp_path))], capsys, monkeypatch)
    assert code == 2
    assert expected in err and err.startswith("sentinel-sidecar: report: ")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),  # a laptop or CI machine: no metadata address is asked
        ({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, True),  # in a pod
        ({"TRACKER_CLOUD_DETECT": "auto"}, False),
        ({"TRACKER_CLOUD_DETECT": "true"}, True),  # asked for outside a pod
        ({"TRACKER_CLOUD_DETECT": "false", "KUBERNETES_SERVICE_HOST": "10.0.0.1"}, False),
    ],
)
def test_cloud_metadata_is_probed_only_in_a_pod_unless_asked(environ, expected):
    assert settings_from([], environ).cloud_detect is expected
