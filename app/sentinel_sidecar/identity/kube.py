"""The in-cluster Kubernetes API: the own pod and node (identity), and the workload's exit code
from the own pod's status."""

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


class KubeApi:
    """The in-cluster API with the pod's service account: GET of one object at a time."""

    def __init__(
        self,
        environ: Mapping[str, str],
        account_dir: Path = SERVICE_ACCOUNT_DIR,
        session: requests.Session | None = None,
    ) -> None:
        """KubeError outside a cluster (no service host, pod name, namespace or token)."""
        host = environ.get("KUBERNETES_SERVICE_HOST")
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        self.pod_name = environ.get("POD_NAME")
        self.node_name = environ.get("NODE_NAME")
        namespace = environ.get("POD_NAMESPACE")
        if namespace is None:
            try:
                namespace = (account_dir / "namespace").read_text().strip()
            except OSError:
                namespace = None
        if not host or not self.pod_name or not namespace:
            raise KubeError("needs KUBERNETES_SERVICE_HOST, POD_NAME and POD_NAMESPACE")
        self.namespace = namespace
        if ":" in host:
            host = f"[{host}]"  # IPv6 service address
        self._base = f"https://{host}:{port}"
        try:
            self._token = (account_dir / "token").read_text().strip()
        except OSError as exc:
            raise KubeError(f"no service account token: {exc.strerror}") from exc
        ca = account_dir / "ca.crt"
        self._verify: str | bool = str(ca) if ca.exists() else True
        if session is None:
            import requests  # only in a cluster: requests costs ~16 MiB of RSS

            session = requests.Session()
        self._session = session

    @property
    def pod_path(self) -> str:
        """The own pod's path."""
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}"

    def get(self, path: str, timeout: float) -> dict[str, Any]:
        """One object; KubeError for anything but a JSON object (403, timeout, garbage)."""
        import requests

        try:
            response = self._session.get(
                self._base + path,
                headers={"Authorization": f"Bearer {self._token}"},
                verify=self._verify,
                timeout=(min(3.0, timeout), timeout),
            )
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise KubeError(f"GET {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise KubeError(f"GET {path}: not a JSON object")
        return data


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
    try:
        api = KubeApi(environ, account_dir, session)
    except KubeError as exc:
        log.warning("k8s_exit_code_unavailable", error=str(exc))
        return None
    while True:
        left = deadline - monotonic()
        if left <= 0:
            log.warning("k8s_exit_code_unknown", reason="workload container not terminated in time")
            return None
        try:
            pod = api.get(api.pod_path, min(5.0, left))
            code = workload_exit_code(pod, own_container, workload_container)
        except (KubeError, ValueError, TypeError, AttributeError) as exc:
            log.warning("k8s_exit_code_unavailable", error=str(exc))
            return None
        if code is not None:
            log.info("k8s_exit_code_read", exit_code=code)
            return code
        sleep(min(_POLL_SECONDS, max(0.0, deadline - monotonic())))
