"""The package's shape: modules import each other without a cycle, layers stay apart, and local
mode imports nothing another mode needs."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent.parent / "app" / "sentinel_sidecar"


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
    assert {"delivery", "delivery.s3", "delivery.upload", "runner"} <= set(graph)


def graph() -> dict[str, set[str]]:
    found = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}
    found.pop("", None)
    return found


def layer(name: str) -> str:
    return name.split(".")[0]


def test_measuring_and_the_spool_never_import_delivery_or_identity():
    for name, imported in graph().items():
        if layer(name) in {"measure", "spool"}:
            wrong = sorted(i for i in imported if layer(i) in {"delivery", "identity"})
            assert not wrong, f"{name} imports {wrong}"


def test_nothing_the_agent_loads_to_record_a_run_imports_the_report():
    modules = graph()
    loaded, todo = set(), ["runner"]
    while todo:
        name = todo.pop()
        if name not in loaded:
            loaded.add(name)
            todo += sorted(modules.get(name, set()))
    assert "delivery.upload" in loaded and "measure.collect" in loaded
    assert not sorted(name for name in loaded if layer(name) == "report")


def test_delivery_never_imports_config():
    # A destination declares its own settings group and reads the whole Settings through a
    # protocol of what it needs: config composes delivery, never the other way round.
    for name, imported in graph().items():
        if layer(name) == "delivery":
            assert "config" not in imported, f"{name} imports config"


def test_every_destination_and_source_is_declared_once():
    from sentinel_sidecar.config import GROUPS
    from sentinel_sidecar.delivery.registry import DESTINATIONS
    from sentinel_sidecar.measure.rows import COLUMN_SETS, EXTENDED_COLUMNS, SENTINEL_COLUMNS

    assert [kind.name for kind in DESTINATIONS] == ["sentinel", "s3", "local"]
    assert all(kind.settings in GROUPS for kind in DESTINATIONS)
    for extended, schema in (
        (False, SENTINEL_COLUMNS),
        (True, SENTINEL_COLUMNS + EXTENDED_COLUMNS),
    ):
        filled = [name for column_set in COLUMN_SETS for name in column_set.columns(extended)]
        assert len(filled) == len(set(filled)) and set(filled) <= set(schema)


def test_what_local_mode_imports_leaves_out_every_other_mode():
    # Each import is compiled and run at every start (docs/PERFORMANCE.md): `run` in local
    # mode loads no network client, no Sentinel code, no YAML and no launcher for `-- CMD`.
    script = (
        "import sys\n"
        "from sentinel_sidecar import deferred\n"
        "deferred.defer_unused()  # as cli.main does first\n"
        "from sentinel_sidecar import assemble, cli, config, runner\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    loaded = set(result.stdout.split())
    assert "sentinel_sidecar.runner" in loaded, result.stderr
    left_out = {"sentinel_sidecar.delivery.sentinel_destination",
                "sentinel_sidecar.delivery.sentinel_api", "sentinel_sidecar.launch",
                "sentinel_sidecar.report.engine", "subprocess", "boto3", "botocore",
                "requests", "yaml"}  # fmt: skip
    assert not sorted(loaded & left_out)
