"""The workload's exit code from the Kubernetes API (own pod's status), when enabled."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    import requests

log = structlog.get_logger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_POLL_SECONDS = 0.5


class KubeError(Exception):
    """The pod status could not be read (no in-cluster config, RBAC, network)."""


def _pod_url(environ: Mapping[str, str], account_dir: Path) -> str:
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT", "443")
    name = environ.get("POD_NAME")
    namespace = environ.get("POD_NAMESPACE")
    if namespace is None:
        try:
            namespace = (account_dir / "namespace").read_text().strip()
        except OSError:
            namespace = None
    if not host or not name or not namespace:
        raise KubeError("needs KUBERNETES_SERVICE_HOST, POD_NAME and POD_NAMESPACE")
    if ":" in host:
        host = f"[{host}]"  # IPv6 service address
    return f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods/{name}"


def workload_exit_code(
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
    environ: Mapping[str, str],
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
    import requests  # only when the feature is on: requests costs ~16 MiB of RSS

    try:
        url = _pod_url(environ, account_dir)
        token = (account_dir / "token").read_text().strip()
    except (KubeError, OSError) as exc:
        log.warning("k8s_exit_code_unavailable", error=str(exc))
        return None
    http = session or requests.Session()
    ca = account_dir / "ca.crt"
    while True:
        left = deadline - monotonic()
        if left <= 0:
            log.warning("k8s_exit_code_unknown", reason="workload container not terminated in time")
            return None
        try:
            response = http.get(
                url,
                headers={"Authorization": f"Bearer {token}"},
                verify=str(ca) if ca.exists() else True,
                timeout=(min(3.0, left), min(5.0, left)),
            )
            response.raise_for_status()
            code = workload_exit_code(response.json(), own_container, workload_container)
        except (requests.RequestException, ValueError, TypeError, AttributeError) as exc:
            log.warning("k8s_exit_code_unavailable", error=str(exc))
            return None
        if code is not None:
            log.info("k8s_exit_code_read", exit_code=code)
            return code
        sleep(min(_POLL_SECONDS, max(0.0, deadline - monotonic())))
