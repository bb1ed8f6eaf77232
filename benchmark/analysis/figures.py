"""Fig. 5: average sensitivity (eq. 6 over eight AP metrics) per model and registration method.

Drawn for a reader who has to judge the numbers, not only compare heights:

- one panel per source (your runs, published, ...); the panels share one y scale only when
  their ranges are alike (:data:`SHARE_RATIO`), so one large value of a short run does not
  flatten the published bars;
- error bars: the 95% CI when the data carry ``ci_low`` / ``ci_high``, else the standard
  deviation over seeds when there are several (the panel title says which);
- a bar that is undefined (eq. 6 with registered AP 0, too few lesion boxes) or absent is
  written "n/a" at the zero line, never drawn as a zero bar;
- |sensitivity| above :data:`~benchmark.analysis.tables.EXTREME` (100 %) is flagged: the bar is clipped at the axis edge,
  hatched, marked with a triangle and its value printed, and the axis is scaled to the others;
- full model names, wrapped; a caption says what produced the numbers (profile, cohort, test
  patients, seeds: :mod:`benchmark.analysis.facts`).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from benchmark.analysis.published import REGISTRATIONS, VARIANT_LABELS  # noqa: E402
from benchmark.analysis.tables import EXTREME, UNDEFINED, display_label  # noqa: E402
from benchmark.atomic import atomic_path  # noqa: E402

PALETTE = {"rigid": "#9ecae1", "affine": "#4292c6", "nonrigid": "#08306b"}
HIGHLIGHT = "#d62728"
NO_DATA = "no data"
SHARE_RATIO = 2.0  # panels share one y scale when their ranges differ by at most this factor
LABEL_WIDTH = 16  # characters per line of a model name under its bars


@dataclass(frozen=True)
class Bar:
    """One bar as drawn: value (NaN = n/a), error interval, why it is n/a."""

    value: float
    low: float = math.nan
    high: float = math.nan
    reason: str = ""


def fig5(
    bars: pd.DataFrame,
    stem: Path,
    labels: dict[str, str] | None = None,
    highlight: str | None = None,
    title: str = "Fig. 5: average sensitivity to registration mismatch (lower = more robust)",
    caption: str = "",
) -> list[Path]:
    """Draw :func:`draw_fig5` and write ``stem``.png and ``stem``.pdf atomically."""
    fig = draw_fig5(bars, labels, highlight, title, caption)
    paths = []
    try:
        for fmt in ("png", "pdf"):
            path = stem.with_suffix(f".{fmt}")
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight", pad_inches=0.15)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def draw_fig5(
    bars: pd.DataFrame,
    labels: dict[str, str] | None = None,
    highlight: str | None = None,
    title: str = "Fig. 5: average sensitivity to registration mismatch (lower = more robust)",
    caption: str = "",
) -> Figure:
    """Grouped bars, one panel per ``source``; the caller closes the figure.

    ``bars``: ``source``, ``model``, ``registration``, ``value`` (average sensitivity in %, NaN
    when undefined); optional ``ci_low`` / ``ci_high`` (95% CI, %), ``undefined_reason``, and
    ``std`` / ``n_seeds``. Several rows of one (source, model, registration) are seeds: their
    mean is drawn with their standard deviation. Every model has a place in every panel: a
    model without rows there is marked "no data", a registration without a row or with NaN
    "n/a". ``highlight``: a model drawn with a red outline.
    """
    if bars.empty:
        raise ValueError(
            "Fig. 5: no sensitivity to plot (no model has unregistered and registered runs)"
        )
    labels = labels or {}
    sources = list(dict.fromkeys(bars["source"]))
    models = list(dict.fromkeys(bars["model"]))
    regs = [r for r in REGISTRATIONS if r in set(bars["registration"])]
    width = 0.8 / len(regs)
    fig = plt.figure(
        figsize=(max(7.0, 1.15 * len(models) + 2.5), 0.6 + 3.0 * len(sources)),
        layout="constrained",
    )
    axes = fig.subplots(len(sources), 1, sharex=True, squeeze=False)[:, 0]
    panels = [_summarise(bars[bars["source"] == source], models, regs) for source in sources]
    limits = _shared([_limits(drawn.values()) for drawn, _ in panels])
    every: list[Bar] = []
    for ax, source, (drawn, error_kind), (low, high, room) in zip(
        axes, sources, panels, limits, strict=True
    ):
        present = set(bars[bars["source"] == source]["model"])
        every += [b for (m, _), b in drawn.items() if m in present]
        for i, model in enumerate(models):
            if model not in present:
                _no_data(ax, i)
                continue
            for j, reg in enumerate(regs):
                x = i + (j - (len(regs) - 1) / 2) * width
                patch = _draw_bar(ax, x, width, drawn[(model, reg)], reg, (low, high, room))
                if model == highlight and patch is not None:
                    patch.set_edgecolor(HIGHLIGHT)
                    patch.set_linewidth(2.0)
        ax.set_ylim(low, high)
        if not any(_finite(b.value) for b in drawn.values()):
            ax.set_yticks([0])  # nothing defined: no scale to read
        ax.axhline(0, color="black", linewidth=0.8)
        ax.grid(axis="y", color="#ddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_ylabel("Average sensitivity (%)")
        ax.set_title(f"{source}{error_kind}", loc="left", fontsize="medium")
    names = [textwrap.fill(display_label(labels.get(m, m)), LABEL_WIDTH) for m in models]
    axes[-1].set_xticks(range(len(models)), names, fontsize="small")
    axes[-1].set_xlim(-0.6, len(models) - 0.4)
    for tick, model in zip(axes[-1].get_xticklabels(), models, strict=True):
        if model == highlight:
            tick.set_fontweight("bold")
            tick.set_color(HIGHLIGHT)
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[r]) for r in regs]
    fig.legend(
        handles, [VARIANT_LABELS[r] for r in regs], loc="outside upper right", ncols=len(regs)
    )
    fig.suptitle(title, x=0.02, ha="left")
    absent = any(set(models) - set(bars[bars["source"] == s]["model"]) for s in sources)
    text = _caption(caption, every, absent)
    chars = int(fig.get_figwidth() * 19)
    fig.supxlabel(
        "\n".join(textwrap.fill(p, chars) for p in text.split("\n")),
        x=0.02,
        ha="left",
        fontsize="x-small",
        color="#333",
    )
    return fig


def _no_data(ax, x: float) -> None:
    """A model absent from a panel: one grey label over its group instead of bars."""
    ax.annotate(
        NO_DATA,
        (x, 0),
        xytext=(0, 4),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize="x-small",
        color="#777",
        style="italic",
    )


def _summarise(
    rows: pd.DataFrame, models: list[str], regs: list[str]
) -> tuple[dict[tuple[str, str], Bar], str]:
    """One :class:`Bar` per (model, registration) of a panel and the error-bar legend text."""
    out: dict[tuple[str, str], Bar] = {}
    kinds: set[str] = set()
    for model in models:
        for reg in regs:
            part = rows[(rows["model"] == model) & (rows["registration"] == reg)]
            bar, kind = _bar(part)
            out[(model, reg)] = bar
            kinds.add(kind)
    kinds.discard("")
    text = {
        "ci": "  (error bars: 95% CI)",
        "sd": "  (error bars: ±1 SD over seeds)",
    }
    if kinds == {"ci"} or kinds == {"sd"}:
        return out, text[kinds.pop()]
    if kinds:
        return out, "  (error bars: 95% CI, or ±1 SD over seeds where there is no CI)"
    return out, ""


def _bar(part: pd.DataFrame) -> tuple[Bar, str]:
    """The bar of one (model, registration) cell and what its error bar means."""
    if part.empty:
        return Bar(math.nan, reason="not run"), ""
    values = part["value"].to_numpy(float)
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Bar(math.nan, reason=_reason(part)), ""
    mean = float(finite.mean())
    if len(part) == 1 and {"ci_low", "ci_high"} <= set(part.columns):
        low, high = float(part["ci_low"].iloc[0]), float(part["ci_high"].iloc[0])
        if math.isfinite(low) and math.isfinite(high):
            return Bar(mean, low, high), "ci"
    if len(finite) > 1:
        sd = float(finite.std(ddof=1))
        return Bar(mean, mean - sd, mean + sd), "sd"
    if len(part) == 1 and "std" in part.columns and _finite(part["std"].iloc[0]):
        sd = float(part["std"].iloc[0])
        return Bar(mean, mean - sd, mean + sd), "sd"
    return Bar(mean), ""


def _reason(part: pd.DataFrame) -> str:
    if "undefined_reason" not in part.columns:
        return "undefined"
    reasons = [str(r) for r in part["undefined_reason"] if isinstance(r, str) and r.strip()]
    return "; ".join(dict.fromkeys(reasons)) or "undefined"


def _limits(bars) -> tuple[float, float, float]:
    """y limits from the bars within :data:`EXTREME` (and their CIs clipped to it), plus room
    for clipped bars; returns (low, high, where a clipped bar ends as a fraction of the room)."""
    bars = list(bars)
    normal = [b for b in bars if _finite(b.value) and abs(b.value) <= EXTREME]
    points = [0.0]
    for b in normal:
        points.append(b.value)
        points += [min(max(e, -EXTREME), EXTREME) for e in (b.low, b.high) if _finite(e)]
    low, high = min(points), max(points)
    span = max(high - low, 5.0)
    low, high = low - 0.12 * span, high + 0.12 * span
    extreme = [b.value for b in bars if _finite(b.value) and abs(b.value) > EXTREME]
    if any(v < 0 for v in extreme):
        low -= 0.35 * span
    if any(v > 0 for v in extreme):
        high += 0.35 * span
    if any(not _finite(b.value) for b in bars):
        high = max(high, 0.25 * span)  # room for the "n/a" text above the zero line
    return low, high, 0.3 * span


def _shared(limits: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """One y scale for all panels when their ranges differ by at most :data:`SHARE_RATIO`,
    so similar panels compare at a glance; otherwise each keeps its own."""
    spans = [high - low for low, high, _ in limits]
    if max(spans) > SHARE_RATIO * min(spans):
        return limits
    low, high = min(lim[0] for lim in limits), max(lim[1] for lim in limits)
    return [(low, high, max(lim[2] for lim in limits))] * len(limits)


def _draw_bar(ax, x: float, width: float, bar: Bar, reg: str, limits) -> Rectangle | None:
    """Draw one bar (or its "n/a"); returns the bar's patch."""
    low, high, room = limits
    color = PALETTE[reg]
    if not _finite(bar.value):
        ax.annotate(
            UNDEFINED,
            (x, 0),
            xytext=(0, 3),
            textcoords="offset points",
            rotation=90,
            ha="center",
            va="bottom",
            fontsize="x-small",
            color="#a33",
        )
        return None
    if abs(bar.value) <= EXTREME:
        (patch,) = ax.bar(x, bar.value, width, color=color, edgecolor="white", linewidth=0.5)
        if _finite(bar.low) and _finite(bar.high):
            ax.errorbar(  # the interval as given: a percentile CI need not contain the value
                x,
                (bar.low + bar.high) / 2,
                yerr=(bar.high - bar.low) / 2,
                fmt="none",
                ecolor="#222",
                elinewidth=0.9,
                capsize=2.5,
            )
        return patch
    # extreme: clipped near the axis edge, hatched, a triangle at the cut, the value beyond it
    end = low + 0.7 * room if bar.value < 0 else high - 0.7 * room
    (patch,) = ax.bar(x, end, width, color=color, edgecolor=HIGHLIGHT, hatch="////", linewidth=0.8)
    ax.plot(x, end, marker="v" if bar.value < 0 else "^", color=HIGHLIGHT, markersize=6)
    ax.annotate(
        f"{bar.value:.0f} %",
        (x, end),
        xytext=(0, -6 if bar.value < 0 else 6),
        textcoords="offset points",
        ha="center",
        va="top" if bar.value < 0 else "bottom",
        fontsize="x-small",
        color=HIGHLIGHT,
        fontweight="bold",
        bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none"},
    )
    return patch


def _caption(caption: str, bars: list[Bar], absent: bool) -> str:
    text = (
        "Each bar: eq. 6 averaged over the eight AP metrics of Fig. 5 (val IoU/IoBB 30/50/70, "
        "test IoU50/IoBB50)."
    )
    if any(_finite(b.value) and abs(b.value) > EXTREME for b in bars):
        text += (
            f" Hatched bars ending in a triangle are clipped: |value| > {EXTREME:.0f} %, printed "
            "at their end (eq. 6 is unstable when the registered AP is near 0)."
        )
    reasons = list(dict.fromkeys(b.reason for b in bars if not _finite(b.value)))
    if reasons:
        text += f" {UNDEFINED}: {'; '.join(reasons)}."
    if absent:
        text += f" {NO_DATA}: the model has no value in that panel (not run, or not published)."
    return f"{text}\n{caption}" if caption else text


def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
