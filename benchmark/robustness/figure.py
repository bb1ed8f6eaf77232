"""The ladder figure: AP against the measured true misalignment, one line per model."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from benchmark.atomic import atomic_path
from benchmark.robustness.levels import LADDER_DIR

FIGURE = "ladder.png"


def ladder_figure(
    levels: pd.DataFrame, summary: pd.DataFrame, title: str, note: str, out: Path
) -> Path:
    """Draw AP (%) with its 95% CI band against ``misalignment_mm``; write ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rpc = dict(zip(summary["model"], summary["rpc"], strict=True))
    fig, ax = plt.subplots(figsize=(7.5, 4.8), layout="constrained")
    for model, rows in levels.groupby("model", sort=False):
        rows = rows.sort_values("misalignment_mm")
        x = rows["misalignment_mm"].to_numpy()
        value = rpc.get(model, math.nan)
        label = f"{model} (rPC {value:.2f})" if math.isfinite(value) else f"{model} (rPC n/a)"
        (line,) = ax.plot(x, 100 * rows["ap"], marker="o", label=label)
        ax.fill_between(
            x,
            100 * rows["ap_low"],
            100 * rows["ap_high"],
            color=line.get_color(),
            alpha=0.15,
            linewidth=0,
        )
    ax.set_xlabel("true misalignment over the liver (mm, mean of the moving phases)")
    ax.set_ylabel(f"AP (%), {title}")
    # the scale follows the data (at least 0-10 %) so that low APs stay readable
    top = max(10.0, 100 * float(levels[["ap", "ap_high"]].max().max()) * 1.1)
    ax.set_ylim(-0.02 * min(top, 100), min(top, 100) + 2)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    fig.suptitle("AP against misalignment (bands: 95% patient-bootstrap CI)", fontsize=11)
    fig.text(0.01, 0.005, note, fontsize=7, color="#555", ha="left", va="bottom", wrap=True)
    fig.get_layout_engine().set(rect=(0, 0.06, 1, 0.94))
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=130, format="png")
    plt.close(fig)
    return out


def ladder_figures(runs_root: Path) -> list[Path]:
    """The ladder figures under a runs folder (``RUNS/robustness/<ladder>/ladder.png``, or
    ``<ladder>/ladder.png`` when given ``RUNS/robustness`` itself)."""
    root = Path(runs_root)
    return sorted(root.glob(f"{LADDER_DIR}/*/{FIGURE}")) + sorted(root.glob(f"*/{FIGURE}"))
