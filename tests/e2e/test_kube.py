"""Exit code from the pod status, against a loopback HTTPS server with real-shaped pod JSON."""

import subprocess
import time
from pathlib import Path
from typing import Any

from sentinel_sidecar.config import PodEnv
from sentinel_sidecar.exit_code import Ending, pod_ending, terminated
from tests.support.peers import KubeApiServer


def pod(workload_state: dict[str, Any]) -> dict[str, Any]:
    """A pod as the API returns it: a native sidecar in initContainerStatuses, the job running."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "train-x7k2p", "namespace": "ml", "uid": "5b1c"},
        "status": {
            "phase": "Running",
            "initContainerStatuses": [
                {"name": "sentinel-sidecar", "ready": True, "restartCount": 0,
                 "state": {"running": {"startedAt": "2026-11-25T01:00:00Z"}}},
            ],
            "containerStatuses": [
                {"name": "train", "ready": False, "restartCount": 0, "image": "python:3.11",
                 "state": workload_state},
            ],
        },
    }  # fmt: skip


RUNNING = {"running": {"startedAt": "2026-11-25T01:00:01Z"}}
TERMINATED = {
    "terminated": {
        "exitCode": 3,
        "reason": "Error",
        "startedAt": "2026-11-25T01:00:01Z",
        "finishedAt": "2026-11-25T01:05:00Z",
        "containerID": "containerd://abc",
    }
}


def environ(api: KubeApiServer) -> dict[str, str]:
    return {
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(api.port),
        "POD_NAME": "train-x7k2p",
    }


def lookup(api: KubeApiServer, account: Path, seconds: float = 5.0) -> int | None:
    ending = ending_of(api, account, seconds)
    return ending.code if ending else None


def ending_of(api: KubeApiServer, account: Path, seconds: float = 5.0) -> Ending | None:
    return pod_ending(
        PodEnv.from_environ(environ(api)),
        time.monotonic() + seconds,
        own_container="sentinel-sidecar",
        workload_container=None,
        account_dir=account,
    )


def test_waits_for_the_workload_to_terminate_and_reads_its_code(api, account):
    api.answers = [(200, pod(RUNNING)), (200, pod(TERMINATED))]
    assert lookup(api, account) == 3
    assert api.seen[0] == ("/api/v1/namespaces/ml/pods/train-x7k2p", "Bearer sa-token")
    killed = {"terminated": {**TERMINATED["terminated"], "exitCode": 137, "reason": "OOMKilled"}}
    api.answers = [(200, pod(killed))]
    assert ending_of(api, account) == Ending(137, oom_killed=True)  # run.json's oom_killed


def test_forbidden_means_unknown(api, account):
    api.answers = [(403, {"kind": "Status", "reason": "Forbidden", "code": 403})]
    assert lookup(api, account) is None


def test_not_terminated_before_the_deadline_means_unknown(api, account):
    api.answers = [(200, pod(RUNNING))]
    started = time.monotonic()
    assert lookup(api, account, seconds=1.0) is None
    assert time.monotonic() - started < 3


def test_garbage_answer_means_unknown(api, account):
    api.answers = [(200, b"<html>proxy error</html>")]
    assert lookup(api, account) is None


def test_outside_a_cluster_means_unknown(tmp_path: Path):
    assert pod_ending(PodEnv(), time.monotonic() + 1, own_container="s", workload_container=None,
                         account_dir=tmp_path) is None  # fmt: skip


def test_untrusted_certificate_means_unknown(api, account):
    # A service-account dir whose CA did not sign the server's certificate.
    other = account.parent / "other"
    other.mkdir()
    (other / "token").write_text("t")
    (other / "namespace").write_text("ml")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=other", "-keyout", str(other / "k.pem"), "-out", str(other / "ca.crt")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    api.answers = [(200, pod(TERMINATED))]
    assert lookup(api, other) is None


def test_classic_sidecar_ignores_its_own_status_and_picks_the_failed_container():
    classic = {
        "status": {
            "containerStatuses": [
                {"name": "sentinel-sidecar", "state": RUNNING},
                {"name": "train", "state": {"terminated": {"exitCode": 0}}},
                {"name": "upload", "state": {"terminated": {"exitCode": 137}}},
            ]
        }
    }
    assert terminated(classic, "sentinel-sidecar", None) == Ending(137)
    assert terminated(classic, "sentinel-sidecar", "train") == Ending(0)


def test_an_oom_kill_is_read_from_the_state_and_from_the_last_state_before_a_restart():
    def status(state: dict, last: dict | None = None) -> dict:
        entry = {"name": "train", "state": {"terminated": state}}
        if last is not None:
            entry["lastState"] = {"terminated": last}
        return {"status": {"containerStatuses": [entry]}}

    killed = {"exitCode": 137, "reason": "OOMKilled"}
    assert terminated(status(killed), "sentinel-sidecar", None) == Ending(137, oom_killed=True)
    restarted = status({"exitCode": 0, "reason": "Completed"}, killed)  # restartPolicy OnFailure
    assert terminated(restarted, "sentinel-sidecar", None) == Ending(0, oom_killed=True)
    error = {"exitCode": 1, "reason": "Error"}
    assert terminated(status(error, error), "sentinel-sidecar", None) == Ending(1)
