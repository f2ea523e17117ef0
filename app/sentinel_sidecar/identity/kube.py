"""The in-cluster Kubernetes API client: GET of the own pod and node with the pod's service
account."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sentinel_sidecar.delivery.retry import CONNECT_TIMEOUT

if TYPE_CHECKING:
    import requests

    from sentinel_sidecar.config import PodEnv

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class KubeError(Exception):
    """The pod status could not be read (no in-cluster config, RBAC, network)."""


class KubeApi:
    """The in-cluster API with the pod's service account: GET of one object at a time."""

    def __init__(
        self,
        pod: PodEnv,
        account_dir: Path = SERVICE_ACCOUNT_DIR,
        session: requests.Session | None = None,
    ) -> None:
        """KubeError outside a cluster (no service host, pod name, namespace or token)."""
        host = pod.service_host
        port = pod.service_port
        self.pod_name = pod.name
        self.node_name = pod.node_name
        namespace = pod.namespace
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
                timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
            )
            response.raise_for_status()
            data = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise KubeError(f"GET {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise KubeError(f"GET {path}: not a JSON object")
        return data
