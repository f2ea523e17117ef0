"""An HTML page as headless Chromium draws it: how many pixels carry the first two series
colours (matplotlib's blue and orange), so a test can tell drawn charts from a blank page."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.tools import require


def series_pixels(page: Path, shot: Path, height: int = 2400) -> tuple[int, int]:
    """(blue, orange) pixels in a screenshot of `page`, 1000 px wide and `height` tall."""
    from PIL import Image

    chromium = require("chromium", ".ci/run installs it from Debian")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size=1000,{height}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    image = Image.open(shot).convert("RGB")
    raw = image.tobytes()
    pixels = [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]
    blue = sum(1 for r, g, b in pixels if abs(r - 31) < 40 and abs(g - 119) < 40 and b > 140)
    orange = sum(1 for r, g, b in pixels if r > 200 and 80 < g < 170 and b < 80)
    print(f"screenshot: {image.size}, {blue} series-blue and {orange} series-orange pixels")
    return blue, orange
