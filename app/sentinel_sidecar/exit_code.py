"""The workload's exit code: its own with `run -- CMD`, else the file its wrapper leaves in the
spool volume (`exit_code`), else (with `k8s_exit_code`) the workload container's state in the
own pod's status."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from sentinel_sidecar.identity.kube import SERVICE_ACCOUNT_DIR, KubeApi, KubeError

if TYPE_CHECKING:
    import requests

    from sentinel_sidecar.config import PodEnv, Settings
    from sentinel_sidecar.launch import Command

log = structlog.get_logger(__name__)

EXIT_CODE_FILE = "exit_code"
_POLL_SECONDS = 0.5


def workload_exit_code(
    settings: Settings,
    command: Command | None,
    deadline: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> int | None:
    """The exit code by the first way that knows it, before `deadline` (monotonic); None when
    none does."""
    if command is not None:
        return command.exit_code(min(1.0, max(0.0, deadline - monotonic())))
    code = read_exit_code(settings.spool_dir)
    if code is None and settings.k8s_exit_code:
        code = pod_exit_code(
            settings.pod,
            deadline,
            own_container=settings.k8s_container_name,
            workload_container=settings.k8s_workload_container,
            monotonic=monotonic,
        )
    return code


def read_exit_code(directory: Path) -> int | None:
    """The workload's exit code from `<spool_dir>/exit_code`, if its wrapper wrote one."""
    try:
        return int((directory / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def terminated_exit_code(
    pod: Mapping[str, Any], own_container: str, workload_container: str | None
) -> int | None:
    """The exit code of the terminated workload container(s) in a pod object; None if none.

    With several terminated workload containers the first non-zero code wins.
    """
    statuses = pod.get("status", {}).get("containerStatuses") or []
    codes = []
    for status in statuses:
        name = status.get("name")
        if name == own_container or (workload_container and name != workload_container):
            continue
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is None or "exitCode" not in terminated:
            return None  # a workload container still runs: no final code yet
        codes.append(int(terminated["exitCode"]))
    if not codes:
        return None
    return next((code for code in codes if code != 0), 0)


def pod_exit_code(
    pod: PodEnv,
    deadline: float,
    *,
    own_container: str,
    workload_container: str | None,
    account_dir: Path = SERVICE_ACCOUNT_DIR,
    session: requests.Session | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int | None:
    """Poll the own pod until the workload container terminated or the deadline passes.

    Every failure is logged and means "exit code unknown" (None); it never raises.
    """
    try:
        api = KubeApi(pod, account_dir, session)
    except KubeError as exc:
        log.warning("k8s_exit_code_unavailable", error=str(exc))
        return None
    while True:
        left = deadline - monotonic()
        if left <= 0:
            log.warning("k8s_exit_code_unknown", reason="workload container not terminated in time")
            return None
        try:
            status = api.get(api.pod_path, min(5.0, left))
            code = terminated_exit_code(status, own_container, workload_container)
        except (KubeError, ValueError, TypeError, AttributeError) as exc:
            log.warning("k8s_exit_code_unavailable", error=str(exc))
            return None
        if code is not None:
            log.info("k8s_exit_code_read", exit_code=code)
            return code
        sleep(min(_POLL_SECONDS, max(0.0, deadline - monotonic())))
