"""Modules the agent imports only when something uses them.

structlog imports `asyncio` at its top for its `async` log methods, which the agent never
calls, and `asyncio` imports `ssl`, which `http.client` (the health server, the metadata probes)
imports too without touching it at import: together ~7 MiB of RSS and tens of milliseconds of
CPU at every start in local mode, which needs neither (docs/PERFORMANCE.md). `defer(name)` puts
a placeholder module in `sys.modules`: `import name` then binds the placeholder, and the first
attribute anybody reads from it imports the real module, copies its namespace into the
placeholder (so every earlier binding sees it) and answers from it. Safe because every use
goes through such an attribute read (`name.x`, `from name import x`, a submodule import asking
for `__path__`): a caller that needs the module gets the real one, only later; one that never
uses it never pays. Sentinel and direct-S3 mode load `ssl` through requests and botocore,
which read its attributes at import, as before.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

DEFERRED = ("asyncio", "ssl", "uuid")  # uuid: structlog.threadlocal, used only when called


def defer(name: str) -> None:
    """Import `name` at the first use of one of its attributes instead of now; nothing when
    it is imported already or does not exist."""
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None:
        return
    placeholder = types.ModuleType(name)
    placeholder.__spec__ = spec

    def load(attribute: str) -> Any:
        if sys.modules.get(name) is placeholder:
            del sys.modules[name]
        real = importlib.import_module(name)
        placeholder.__dict__.update(real.__dict__)
        return getattr(real, attribute)

    placeholder.__dict__["__getattr__"] = load  # PEP 562: asked for what the module lacks
    sys.modules[name] = placeholder


def defer_unused() -> None:
    """Defer the modules of `DEFERRED` (first thing in `cli.main`)."""
    for name in DEFERRED:
        defer(name)
