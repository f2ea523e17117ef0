import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pod as simulated
from tests.support.peers import KubeApiServer, MotoServer, S3Proxy, SentinelServer, service_account


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """One moto server (S3, STS, IAM) with signature checking, for the whole session."""
    server = MotoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[S3Proxy]:
    server = S3Proxy(moto.port)
    yield server
    server.close()


@pytest.fixture
def sentinel(moto: MotoServer, proxy: S3Proxy) -> Iterator[SentinelServer]:
    server = SentinelServer(moto, proxy, moto.new_bucket())
    yield server
    server.close()


@pytest.fixture
def workload() -> Iterator[subprocess.Popen[bytes]]:
    """A small real workload process: a little CPU every 10 ms, until the test ends."""
    process = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True:\n    sum(range(20000)); time.sleep(0.01)"]
    )
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def account(tmp_path: Path) -> Path:
    """A service-account dir for the in-cluster API below."""
    return service_account(tmp_path / "serviceaccount")


@pytest.fixture
def api(account: Path) -> Iterator[KubeApiServer]:
    """The Kubernetes API over TLS on 127.0.0.1, trusting `account`'s CA."""
    server = KubeApiServer(account / "ca.crt", account.parent / "key.pem")
    yield server
    server.close()


@pytest.fixture
def pod() -> Iterator[simulated.Pod]:
    """A fresh simulated pod (root only: the modules using it skip without)."""
    simulated_pod = simulated.Pod()
    yield simulated_pod
    simulated_pod.close()
