"""Deferred imports: nothing loaded until an attribute is read, then the whole module."""

import subprocess
import sys

SCRIPT = r"""
import sys
from sentinel_sidecar.deferred import defer
defer("asyncio")
import structlog  # binds the placeholder: structlog reads no asyncio attribute at import
import asyncio
assert "asyncio.base_events" not in sys.modules and "_ssl" not in sys.modules
async def answer():
    return 42
assert asyncio.run(answer()) == 42  # the first use loads it whole
from asyncio import sleep  # and every later way in sees the real module
import asyncio.events
assert sys.modules["asyncio"].run is asyncio.run and callable(sleep)
print("ok")
"""


def test_a_deferred_module_loads_at_its_first_use_and_works_whole():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.stdout == "ok\n", result.stderr


def test_deferring_a_module_already_imported_changes_nothing():
    from sentinel_sidecar.deferred import defer

    before = sys.modules["subprocess"]
    defer("subprocess")
    assert sys.modules["subprocess"] is before
