"""The README's picture of the report:

    python docs/report_screenshot.py results/default/report.html docs/img/report.png

Headless Chromium (Debian's `chromium` package) renders the Snakemake report in a tall window, since the report
centres its first page vertically; the page is then cropped from its first line, the sidebar kept."""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from PIL import Image


def screenshot(report: Path, out: Path, width: int = 1400, height: int = 1000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tall = Path(tmp) / "tall.png"
        subprocess.run(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={width},6000", "--virtual-time-budget=8000", f"--screenshot={tall}",
             report.resolve().as_uri()],
            check=True, capture_output=True,
        )  # fmt: skip
        image = Image.open(tall).convert("RGB")
        pixels = image.load()
        top = next(y for y in range(image.height) if any(pixels[x, y] != (255, 255, 255) for x in range(300, width, 3)))
        page = image.crop((0, max(top - 30, 0), width, max(top - 30, 0) + height))
        page.paste(image.crop((0, 0, 280, height)), (0, 0))  # the sidebar sits at the top of the window
        page.save(out, optimize=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a report.html written by snakemake --report")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--height", type=int, default=1000, help="pixels of the page kept")
    args = parser.parse_args()
    screenshot(args.report, args.out, height=args.height)
