from collections.abc import Iterator

import psutil
import pytest


@pytest.fixture(autouse=True)
def _real_procfs_after_each_test() -> Iterator[None]:
    """ProcReader points psutil at its proc_root; put it back for the next test."""
    yield
    psutil.PROCFS_PATH = "/proc"
