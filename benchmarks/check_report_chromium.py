"""Render a phasebench HTML report in headless Chromium and save a screenshot of the page.

    python benchmarks/check_report_chromium.py REPORT.html [--out SHOT.png] [--height PX]

Without a report argument, a report of a small fabricated run folder (the published AP as
results) is written to a temporary folder first. Chromium: ``apt-get install -y chromium``.
It runs headless with a fresh profile folder and no network services. The page is rendered
in a window ``--height`` pixels tall and the white space below it is cut off; when the page
reaches the bottom of the window, a larger ``--height`` shows the rest. Exit status 0 when
the screenshot was written and is not blank.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from benchmark.analysis import published
from benchmark.analysis.report import write_report


def fabricated_runs(root: Path) -> Path:
    """Run folders for GSSD and GSSD++ whose metrics are the published AP."""
    ap = published.load_ap()
    for (reg, model), part in ap[ap["model"].isin(["gssd", "gssd_pp"])].groupby(
        ["registration", "model"]
    ):
        run = root / "published" / reg / model / "seed0"
        run.mkdir(parents=True)
        metrics: dict = {"val": {}, "test": {}}
        for r in part.itertuples():
            metrics[r.split][r.metric] = r.value / 100
        (run / "config.json").write_text(json.dumps({"variant": reg, "model": model, "seed": 0}))
        (run / "metrics.json").write_text(json.dumps(metrics))
    return root


FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars")  # fmt: skip


def screenshot(
    report: Path, out: Path, browser: str, width: int = 1400, height: int = 12000
) -> bool:
    """Write ``out`` (PNG) of ``report``, cropped below the page; True when the page may go on
    below the window (its last rows are not blank)."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
               f"--screenshot={out.resolve()}", report.resolve().as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    image = Image.open(out).convert("RGB")
    ink = np.asarray(image.convert("L")) < 250
    rows = np.flatnonzero(ink.any(axis=1))
    if len(rows):
        image.crop((0, 0, image.width, min(image.height, rows[-1] + 40))).save(out)
    return bool(len(rows)) and rows[-1] >= height - 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, help="HTML report (default: fabricate one)")
    parser.add_argument(
        "--out", type=Path, default=Path("report-screenshot.png"), help="PNG to write"
    )
    parser.add_argument("--height", type=int, default=12000, help="window height in pixels")
    args = parser.parse_args(argv)
    browser = (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    if browser is None:
        print("chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = args.report or write_report(
            fabricated_runs(Path(tmp) / "runs"), Path(tmp) / "report.html"
        )
        cut = screenshot(report, args.out, browser, height=args.height)
    if cut:
        print(f"the page goes on below {args.height} px: rerun with a larger --height")
    pixels = np.asarray(Image.open(args.out).convert("L"))
    ink = float((pixels < 200).mean())
    print(f"{args.out}: {pixels.shape[1]}x{pixels.shape[0]} px, {100 * ink:.1f}% non-white")
    return 0 if ink > 0.01 else 1


if __name__ == "__main__":
    raise SystemExit(main())
