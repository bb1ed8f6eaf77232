"""Fig. 5: average sensitivity (eq. 6 over eight AP metrics) per model and registration method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from benchmark.analysis.published import REGISTRATIONS, VARIANT_LABELS  # noqa: E402
from benchmark.atomic import atomic_path  # noqa: E402

PALETTE = {"Rigid": "#9ecae1", "Affine": "#4292c6", "Non-rigid": "#08306b"}


def fig5(
    bars: pd.DataFrame,
    stem: Path,
    labels: dict[str, str] | None = None,
    highlight: str | None = None,
    title: str = "Fig. 5: robustness to registration mismatch",
) -> list[Path]:
    """Grouped bars, one panel per ``source``; writes ``stem``.png and ``stem``.pdf atomically.

    ``bars``: ``source`` (e.g. "ours", "published"), ``model``, ``registration``, ``value``
    (average sensitivity in %), one row per seed (error bars show the standard deviation when a
    model has several). ``highlight``: a model drawn with a bold outline and label.
    """
    if bars.empty:
        raise ValueError(
            "Fig. 5: no sensitivity to plot (no model has unregistered and registered runs)"
        )
    labels = labels or {}
    data = bars.assign(
        Model=[labels.get(m, m) for m in bars["model"]],
        Registration=[VARIANT_LABELS[r] for r in bars["registration"]],
    )
    sources = list(dict.fromkeys(data["source"]))
    order = list(dict.fromkeys(data["Model"]))
    hue_order = [
        VARIANT_LABELS[r] for r in REGISTRATIONS if VARIANT_LABELS[r] in set(data["Registration"])
    ]
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"):
        fig, axes = plt.subplots(
            len(sources),
            1,
            figsize=(max(6.0, 0.9 * len(order) + 2), 3.2 * len(sources)),
            sharex=True,
            sharey=True,
            squeeze=False,
        )
        for ax, source in zip(axes[:, 0], sources, strict=True):
            sns.barplot(
                data=data[data["source"] == source],
                x="Model",
                y="value",
                hue="Registration",
                order=order,
                hue_order=hue_order,
                palette=PALETTE,
                errorbar="sd",
                capsize=0.1,
                err_kws={"linewidth": 1},
                ax=ax,
            )
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_ylabel("Average sensitivity (%)")
            ax.set_xlabel("")
            ax.set_title(source, loc="left", fontsize="medium")
            ax.legend(title=None, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
            if highlight is not None and labels.get(highlight, highlight) in order:
                index = order.index(labels.get(highlight, highlight))
                for container in ax.containers:
                    for i, patch in enumerate(getattr(container, "patches", [])):
                        if i == index:
                            patch.set_edgecolor("#d62728")
                            patch.set_linewidth(2.0)
        axis = axes[-1, 0]
        axis.set_xticks(range(len(order)), order, rotation=30, ha="right")
        for tick in axis.get_xticklabels():
            if highlight is not None and tick.get_text() == labels.get(highlight, highlight):
                tick.set_fontweight("bold")
                tick.set_color("#d62728")
        fig.suptitle(title)
        fig.tight_layout()
        paths = []
        for fmt in ("png", "pdf"):
            path = stem.with_suffix(f".{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150)
            paths.append(path)
        plt.close(fig)
    return paths
