"""Regenerate what the README shows: the demo's output and `docs/report.png`, the report page on
that demo's output as headless Chromium draws it.

    python docs/examples.py            # from the repository, with the `report` extra installed

`tests/deploy/test_readme.py` checks that the demo still prints what the README shows (numbers and
paths aside)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
START = "<!-- demo-output: made by `python docs/examples.py` -->\n```\n"
END = "```\n<!-- /demo-output -->"


def shown_demo_output(readme: str) -> str:
    """The demo output the README shows."""
    return readme[readme.index(START) + len(START) : readme.index(END)]


def run_demo(directory: Path, seconds: float = 15.0) -> str:
    """What `sentinel-sidecar demo` prints on stdout, the temp directory named as `<dir>`."""
    result = subprocess.run(
        [sys.executable, "-m", "sentinel_sidecar", "demo", "--seconds", str(seconds),
         "--dir", str(directory)],
        capture_output=True, text=True, timeout=120, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return result.stdout.replace(str(directory), "/tmp/sentinel-demo-x1")


def screenshot(page: Path, png: Path) -> None:
    """The page as headless Chromium draws it, 1000 px wide."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is missing: apt-get install chromium")
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         "--window-size=1000,2300", f"--screenshot={png}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="sentinel-demo-") as base:
        directory = Path(base)
        output = run_demo(directory)
        readme = README.read_text()
        README.write_text(readme.replace(shown_demo_output(readme), output))
        page = directory / "report.html"
        subprocess.run(
            [sys.executable, "-m", "sentinel_sidecar", "report", str(directory / "output"),
             "--html", str(page)],
            check=True, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        screenshot(page, ROOT / "docs" / "report.png")
    print(f"updated {README} and {ROOT / 'docs' / 'report.png'}")


def skeleton(text: str) -> list[str]:
    """Lines with numbers (and quantities: `1990m`, `2`, `256Mi`) as `#`, spaces as one: what
    must not change between two runs."""
    number = re.compile(r"\d+(\.\d+)?(m|Mi|Gi)?\b")
    return [" ".join(number.sub("#", line).split()) for line in text.splitlines()]


if __name__ == "__main__":
    main()
