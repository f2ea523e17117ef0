"""How the workload ended: its exit code — its own with `run -- CMD`, else the file its wrapper
leaves in the spool volume (`exit_code`), else (with `k8s_exit_code`) the workload container's
state in the own pod's status, which also says whether it was OOMKilled."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
OOM_KILLED = "OOMKilled"  # a terminated container's reason when the kernel's OOM killer hit


@dataclass(frozen=True)
class Ending:
    """How the workload ended: its exit code (None: unknown), and whether the pod's status says
    it was OOMKilled — at the end, or before a restart (`lastState`)."""

    code: int | None
    oom_killed: bool = False


def workload_ending(
    settings: Settings,
    command: Command | None,
    deadline: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> Ending:
    """The exit code by the first way that knows it, before `deadline` (monotonic)."""
    if command is not None:
        return Ending(command.exit_code(min(1.0, max(0.0, deadline - monotonic()))))
    code = read_exit_code(settings.spool_dir)
    if code is None and settings.k8s_exit_code:
        ending = pod_ending(
            settings.pod,
            deadline,
            own_container=settings.k8s_container_name,
            workload_container=settings.k8s_workload_container,
            monotonic=monotonic,
        )
        return ending or Ending(None)
    return Ending(code)


def read_exit_code(directory: Path) -> int | None:
    """The workload's exit code from `<spool_dir>/exit_code`, if its wrapper wrote one."""
    try:
        return int((directory / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def terminated(
    pod: Mapping[str, Any], own_container: str, workload_container: str | None
) -> Ending | None:
    """How the workload container(s) in a pod object ended; None while one still runs.

    With several terminated workload containers the first non-zero code wins; OOMKilled when
    any of them was, now or before a restart.
    """
    statuses = pod.get("status", {}).get("containerStatuses") or []
    codes = []
    oom_killed = False
    for status in statuses:
        name = status.get("name")
        if name == own_container or (workload_container and name != workload_container):
            continue
        ended = (status.get("state") or {}).get("terminated")
        if ended is None or "exitCode" not in ended:
            return None  # a workload container still runs: no final code yet
        codes.append(int(ended["exitCode"]))
        before = (status.get("lastState") or {}).get("terminated") or {}
        oom_killed |= OOM_KILLED in (ended.get("reason"), before.get("reason"))
    if not codes:
        return None
    return Ending(next((code for code in codes if code != 0), 0), oom_killed)


def pod_ending(
    pod: PodEnv,
    deadline: float,
    *,
    own_container: str,
    workload_container: str | None,
    account_dir: Path = SERVICE_ACCOUNT_DIR,
    session: requests.Session | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Ending | None:
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
            ending = terminated(status, own_container, workload_container)
        except (KubeError, ValueError, TypeError, AttributeError) as exc:
            log.warning("k8s_exit_code_unavailable", error=str(exc))
            return None
        if ending is not None:
            log.info("k8s_exit_code_read", exit_code=ending.code, oom_killed=ending.oom_killed)
            return ending
        sleep(min(_POLL_SECONDS, max(0.0, deadline - monotonic())))
