"""The workload's exit code as its wrapper leaves it in the spool volume (`exit_code`)."""

from __future__ import annotations

from pathlib import Path

EXIT_CODE_FILE = "exit_code"


def read_exit_code(directory: Path) -> int | None:
    """The workload's exit code from `<spool_dir>/exit_code`, if its wrapper wrote one."""
    try:
        return int((directory / EXIT_CODE_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
