"""The package's shape: modules import each other without a cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "app" / "sentinel_sidecar"


def module_name(path: Path) -> str:
    """`delivery.s3` for `delivery/s3.py`, `delivery` for `delivery/__init__.py`."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(module: Path) -> set[str]:
    """The package's own modules that `module` imports (TYPE_CHECKING imports included); a
    submodule's import runs its package's `__init__` first, so that counts as imported too,
    except for the packages `module` itself is in (they are already being imported)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if not (isinstance(node, ast.ImportFrom) and node.module):
            continue
        parts = node.module.split(".")
        if parts[0] != "sentinel_sidecar":
            continue
        if len(parts) == 1:
            found |= {alias.name for alias in node.names}
        for end in range(2, len(parts) + 1):
            found.add(".".join(parts[1:end]))
    name = module_name(module).split(".")
    return found - {".".join(name[:end]) for end in range(1, len(name) + 1)}


def test_no_import_cycle():
    graph = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}
    graph.pop("", None)  # the package's own __init__
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name not in graph:
            return
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting, name])
        visiting.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)
    assert {"delivery", "delivery.s3", "uploader", "runner"} <= set(graph)
