"""Sensitivity to registration mismatch, paper eq. 6, with its uncertainty.

``sensitivity = 1 - perf(f_unregistered, D_unregistered) / perf(f_R, D_R)``: the relative
performance lost by training and testing on the unregistered cohort instead of the cohort
registered with method ``R``. Lower is more robust; positive means registration helped.

A cell is undefined (value NaN, ``undefined_reason`` says why; printed "n/a", never 100 %) when
the split holds fewer than ``min_boxes`` lesion boxes (:data:`MIN_LESION_BOXES` by default: with
a handful of boxes one detection moves AP by tens of points), when the registered AP is 0 in
any seed (eq. 6 divides by it), or when it is 0 in more than 2.5 % of the bootstrap resamples
(then the 95 % interval has no lower end). The Fig. 5 average is undefined when any of its eight
cells is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from benchmark.analysis.defaults import MIN_LESION_BOXES as MIN_LESION_BOXES
from benchmark.analysis.published import AVERAGE, METRICS, REGISTRATIONS
from benchmark.evaluation import CI_LEVEL, percentile_ci
from benchmark.vocabulary import UNREGISTERED

COLUMNS = (
    "model",
    "registration",
    "split",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "std",
    "n_seeds",
    "undefined_reason",
)
#: (model, registration, seed, split, metric) -> AP of each bootstrap resample (the AP's unit)
Replicates = Mapping[tuple[str, str, int, str, str], np.ndarray]


def sensitivity(perf_unregistered: float, perf_registered: float) -> float:
    """Eq. 6 as a fraction (the paper prints it in %); both performances in the same unit."""
    u, r = float(perf_unregistered), float(perf_registered)
    if not (math.isfinite(u) and math.isfinite(r)):
        raise ValueError(f"sensitivity needs finite performances, got {u} and {r}")
    if r <= 0:
        raise ValueError(f"sensitivity is undefined for registered performance {r} <= 0")
    return 1.0 - u / r


def sensitivity_frame(
    ap: pd.DataFrame,
    replicates: Replicates | None = None,
    lesion_boxes: Mapping[tuple[str, str, int, str], int] | None = None,
    min_boxes: int = 0,
    level: float = CI_LEVEL,
    cells: Sequence[tuple[str, str]] = METRICS,
) -> pd.DataFrame:
    """Eq. 6 (%) per model, registration method and (split, metric) cell, plus the Fig. 5 average.

    ``ap``: tidy AP with columns ``model, registration, split, metric, value`` (any unit) and
    optionally ``seed``. The registered run of seed k is paired with the unregistered run of
    seed k. Per cell: ``value`` is the mean over seeds of eq. 6, ``std`` its sample standard
    deviation over seeds (NaN for one seed), ``n_seeds`` the paired seeds. With
    ``replicates`` (the same patient resamples for both runs of a seed, i.e. a paired
    bootstrap) ``ci_low, ci_high`` are the percentile interval of the replicates of all seeds
    pooled, so the interval covers both the patient sample and the seed; the average is formed
    within each replicate. ``lesion_boxes``: ``(model, registration, seed, split) -> boxes``,
    checked against ``min_boxes``. ``cells``: the (split, metric) cells (default the paper's
    eight, :data:`METRICS`); the average row needs all eight. Columns: :data:`COLUMNS`.
    """
    frame = ap if "seed" in ap.columns else ap.assign(seed=0)
    values = {
        (r.model, r.registration, int(r.seed), r.split, r.metric): float(r.value)
        for r in frame.itertuples()
    }
    replicates = replicates or {}
    lesion_boxes = lesion_boxes or {}
    rows = []
    models = list(dict.fromkeys(m for m, *_ in values))
    found_pairs = {(m, r) for m, r, *_ in values if r in REGISTRATIONS}
    pairs = [(m, r) for m in models for r in REGISTRATIONS if (m, r) in found_pairs]
    cells = list(cells)
    for model, reg in pairs:
        found = {}
        for split, metric in cells:
            seeds = [
                k
                for (m, r, k, s, x) in values
                if (m, r, s, x) == (model, reg, split, metric)
                and (model, UNREGISTERED, k, split, metric) in values
            ]
            if not seeds:
                continue
            seeds = sorted(seeds)
            u = np.array([values[(model, UNREGISTERED, k, split, metric)] for k in seeds])
            r = np.array([values[(model, reg, k, split, metric)] for k in seeds])
            boxes = [
                lesion_boxes[key]
                for k in seeds
                for v in (UNREGISTERED, reg)
                if (key := (model, v, k, split)) in lesion_boxes
            ]
            reps = _paired(replicates, model, reg, seeds, split, metric)
            found[(split, metric)] = _Cell(seeds, u, r, reps, min(boxes, default=None))
        for (split, metric), cell in found.items():
            rows.append((model, reg, split, metric, *cell.summary(min_boxes, level)))
        if found and set(METRICS) <= set(cells):
            eight = {c: found[c] for c in METRICS if c in found}
            rows.append((model, reg, *AVERAGE, *_average(eight, min_boxes, level)))
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    return out.astype({"n_seeds": int}) if len(out) else out


class _Cell:
    """One (model, registration, split, metric): per-seed AP pairs and their resamples."""

    def __init__(self, seeds, u, r, reps, boxes):
        self.seeds, self.u, self.r, self.reps, self.boxes = seeds, u, r, reps, boxes

    def reason(self, min_boxes: int) -> str:
        if self.boxes is not None and self.boxes < min_boxes:
            return f"{self.boxes} lesion boxes in the split (fewer than {min_boxes})"
        if not (np.isfinite(self.u).all() and np.isfinite(self.r).all()):
            return "no AP (the split has no lesion boxes)"
        zero = [k for k, r in zip(self.seeds, self.r, strict=True) if not r > 0]
        if zero:
            return f"registered AP is 0 (seed {', '.join(map(str, zero))})"
        return ""

    def per_seed(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.r > 0, 100.0 * (1.0 - self.u / self.r), np.nan)

    def replicates(self) -> np.ndarray | None:
        """Eq. 6 (%) per resample, seeds pooled; NaN where the registered AP is 0."""
        if self.reps is None:
            return None
        u, r = self.reps
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(r > 0, 100.0 * (1.0 - u / r), np.nan)

    def summary(self, min_boxes: int, level: float) -> tuple:
        return _summary(
            self.per_seed(), self.replicates(), self.reason(min_boxes), len(self.seeds), level
        )


def _average(cells: dict, min_boxes: int, level: float) -> tuple:
    """The Fig. 5 average: mean of the eight cells per seed, and per resample."""
    missing = [f"{s} {m}" for s, m in METRICS if (s, m) not in cells]
    undefined = [f"{s} {m}" for (s, m), c in cells.items() if c.reason(min_boxes)]
    seeds = [c.seeds for c in cells.values()]
    if missing:
        reason = f"no value for {', '.join(missing)}"
    elif len(undefined) == len(METRICS):
        reason = "all eight cells undefined"
    elif undefined:
        reason = f"undefined cells: {', '.join(undefined)}"
    elif any(s != seeds[0] for s in seeds):
        reason = "the eight cells come from different seeds"
    else:
        reason = ""
    if reason:
        return _summary(np.array([np.nan]), None, reason, len(seeds[0]), level)
    per_seed = np.mean([c.per_seed() for c in cells.values()], axis=0)
    reps = [c.replicates() for c in cells.values()]
    pooled = None if any(r is None for r in reps) else np.mean(reps, axis=0)
    return _summary(per_seed, pooled, "", len(seeds[0]), level)


def _summary(
    per_seed: np.ndarray, reps: np.ndarray | None, reason: str, n_seeds: int, level: float
) -> tuple:
    """``value, ci_low, ci_high, std, n_seeds, undefined_reason`` of one cell."""
    if not reason and reps is not None:
        share = float(np.mean(~np.isfinite(reps))) if len(reps) else 0.0
        if share > (1.0 - level) / 2.0:
            reason = f"registered AP is 0 in {100 * share:.0f}% of the bootstrap resamples"
    nan = float("nan")
    if reason:
        return nan, nan, nan, nan, n_seeds, reason
    low, high = percentile_ci(reps, level) if reps is not None else (nan, nan)
    std = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else nan
    return float(np.mean(per_seed)), low, high, std, n_seeds, ""


def _paired(
    replicates: Replicates, model: str, reg: str, seeds: list[int], split: str, metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Pooled (unregistered, registered) resample APs of the seeds; None when any is absent."""
    u, r = [], []
    for k in seeds:
        a = replicates.get((model, UNREGISTERED, k, split, metric))
        b = replicates.get((model, reg, k, split, metric))
        if a is None or b is None or len(a) != len(b):
            return None
        u.append(a)
        r.append(b)
    return np.concatenate(u), np.concatenate(r)
