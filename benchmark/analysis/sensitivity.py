"""Sensitivity to registration mismatch, paper eq. 6.

``sensitivity = 1 - perf(f_unregistered, D_unregistered) / perf(f_R, D_R)``: the relative
performance lost by training and testing on the unregistered cohort instead of the cohort
registered with method ``R``. Lower is more robust; positive means registration helped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmark.analysis.published import AVERAGE, METRICS, REGISTRATIONS


def sensitivity(perf_unregistered: float, perf_registered: float) -> float:
    """Eq. 6 as a fraction (the paper prints it in %); both performances in the same unit."""
    u, r = float(perf_unregistered), float(perf_registered)
    if not (math.isfinite(u) and math.isfinite(r)):
        raise ValueError(f"sensitivity needs finite performances, got {u} and {r}")
    if r <= 0:
        raise ValueError(f"sensitivity is undefined for registered performance {r} <= 0")
    return 1.0 - u / r


def sensitivity_frame(ap: pd.DataFrame) -> pd.DataFrame:
    """Eq. 6 (%) per model, registration method and metric, plus the Fig. 5 average.

    ``ap``: tidy AP with columns ``model, registration, split, metric, value`` (any unit) and
    optionally ``seed``. Registered runs are paired with the unregistered run of the same seed;
    the average over the eight :data:`METRICS` is formed per seed (only when all eight exist),
    then every value is summarised over seeds as ``value`` (mean), ``std`` (sample standard
    deviation, NaN for one seed) and ``n_seeds``. Per-seed values are in ``per_seed_frame``.
    """
    per_seed = per_seed_frame(ap)
    keys = ["model", "registration", "split", "metric"]
    if per_seed.empty:
        return pd.DataFrame(columns=[*keys, "value", "std", "n_seeds"])
    grouped = per_seed.groupby(keys, sort=False)["value"]
    out = grouped.agg(value="mean", std="std", n_seeds="count").reset_index()
    return out


def per_seed_frame(ap: pd.DataFrame) -> pd.DataFrame:
    """Eq. 6 (%) per model, registration, seed and metric, with the per-seed average rows."""
    frame = ap.copy()
    if "seed" not in frame.columns:
        frame["seed"] = 0
    wanted = pd.MultiIndex.from_tuples(METRICS)
    frame = frame[pd.MultiIndex.from_frame(frame[["split", "metric"]]).isin(wanted)]
    keys = ["model", "seed", "split", "metric"]
    unreg = frame[frame["registration"] == "unregistered"][[*keys, "value"]]
    reg = frame[frame["registration"].isin(REGISTRATIONS)][[*keys, "registration", "value"]]
    both = reg.merge(unreg, on=keys, suffixes=("_r", "_u"))
    r, u = both["value_r"].astype(float), both["value_u"].astype(float)
    both["value"] = np.where(r > 0, 100.0 * (1.0 - u / r.where(r > 0)), np.nan)
    cells = both[["model", "registration", "seed", "split", "metric", "value"]]
    complete = cells.dropna(subset=["value"]).groupby(["model", "registration", "seed"], sort=False)
    average = complete["value"].agg(["mean", "count"]).reset_index()
    average = average[average["count"] == len(METRICS)].drop(columns="count")
    average = average.rename(columns={"mean": "value"}).assign(split=AVERAGE[0], metric=AVERAGE[1])
    return pd.concat([cells, average[cells.columns]], ignore_index=True)


def bootstrap_replicates(
    unregistered: pd.DataFrame,
    registered: pd.DataFrame,
    keys: Sequence[str],
    n_boot: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Eq. 6 (%) over ``n_boot`` paired patient resamplings of one split, per metric key.

    ``unregistered`` / ``registered``: the two runs' ``predictions_<split>.csv`` tables. Each
    replicate draws patients with replacement once and re-weights BOTH runs with the same draw
    (the variants hold the same patients), so the interval reflects the patient sample, not two
    independent ones. Matching uses :mod:`benchmark.evaluation` (the paper's protocol).
    """
    from benchmark.evaluation import average_precision, parse_metric

    ev_u, ev_r = _evaluator(unregistered), _evaluator(registered)
    patients = np.union1d(ev_u.group_names, ev_r.group_names)
    rng = np.random.default_rng(seed)
    draws = np.stack(
        [
            np.bincount(rng.integers(0, len(patients), len(patients)), minlength=len(patients))
            for _ in range(n_boot)
        ]
    ).astype(float)
    out: dict[str, np.ndarray] = {}
    for key in keys:
        aps = []
        for ev in (ev_u, ev_r):
            m = ev.match(*parse_metric(key))
            weights = draws[:, np.searchsorted(patients, ev.group_names)]
            aps.append(
                np.array(
                    [
                        average_precision(m.tp, float(w @ m.gt_per_group), w[m.det_group])
                        for w in weights
                    ]
                )
            )
        with np.errstate(divide="ignore", invalid="ignore"):
            out[key] = np.where(aps[1] > 0, 100.0 * (1.0 - aps[0] / aps[1]), np.nan)
    return out


def percentile_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite ``values`` (NaN, NaN when none)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def _evaluator(predictions: pd.DataFrame):
    """:class:`benchmark.evaluation.Evaluator` of a ``predictions_<split>.csv`` table."""
    from benchmark.evaluation import PREDICTION_COLUMNS, Evaluator

    missing = set(PREDICTION_COLUMNS) - set(predictions.columns)
    if missing:
        raise ValueError(f"predictions table lacks columns {sorted(missing)}")
    frame = predictions.assign(patient=predictions["patient"].astype(str))
    images = frame[["patient", "slice"]].drop_duplicates().sort_values(["patient", "slice"])
    gts, dets, scores = [], [], []
    groups = {key: part for key, part in frame.groupby(["patient", "slice"], sort=False)}
    for key in images.itertuples(index=False, name=None):
        part = groups[key]
        box = part[["x0", "y0", "x1", "y1"]].to_numpy(float)
        is_gt = (part["kind"] == "gt").to_numpy()
        gts.append(box[is_gt])
        dets.append(box[~is_gt])
        scores.append(part["score"].to_numpy(float)[~is_gt])
    return Evaluator(gts, dets, scores, groups=images["patient"].tolist())
