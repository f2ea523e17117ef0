import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.peers import MotoServer, S3Proxy, SentinelServer


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
