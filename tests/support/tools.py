"""Binaries a test needs from the machine: found, or the test skips (fails in CI, whose
`.ci/run` installs them)."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def require(name: str, where: str) -> str:
    """The path of the binary `name`; `where` says how .ci/run gets it."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed ({where})")
    return path


def missing(reason: str) -> NoReturn:
    """Skip with `reason`, or fail with it in CI."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
