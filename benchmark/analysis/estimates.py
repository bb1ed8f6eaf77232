"""Every AP and sensitivity of a set of runs, each with its 95 % interval.

AP is recomputed from each run's ``predictions_<split>.csv`` (so old run folders are measured by
the current rule, :mod:`benchmark.evaluation`); a run without that file falls back to its
``metrics.json`` values and has no interval.

Intervals (95 %, percentile): the patients of a split are resampled with replacement, ``n_boot``
times. Within one seed every run (all models, the unregistered and the registered variants) is
re-weighted by the SAME resamples, so eq. 6 is a paired bootstrap; each seed gets its own
resamples (seeded by ``seed``, the run seed and the split, so every number is reproducible). With
several seeds, ``value`` is the mean over seeds of the per-seed values, ``std`` their standard
deviation, and ``ci_low, ci_high`` the interval of all seeds' resamples pooled: it covers the
patient sample and the seed-to-seed spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from benchmark.analysis.defaults import DEFAULT_BOOTSTRAP as DEFAULT_BOOTSTRAP
from benchmark.analysis.published import METRICS
from benchmark.analysis.runs import AP_KEYS, Run, RunSet
from benchmark.analysis.sensitivity import MIN_LESION_BOXES, sensitivity_frame
from benchmark.evaluation import (
    CI_LEVEL,
    SCORE_THRESHOLD,
    Evaluator,
    patient_draws,
    percentile_ci,
)

SPLITS = ("val", "test")
AP_COLUMNS = (
    "model",
    "registration",
    "split",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "std",
    "n_seeds",
)
SPLIT_COLUMNS = ("model", "registration", "seed", "split", "patients", "lesion_boxes")


@dataclass
class Estimates:
    """AP and sensitivity (%) with 95 % intervals, and what they rest on."""

    ap: pd.DataFrame  # AP_COLUMNS, mean over seeds
    ap_per_seed: pd.DataFrame  # model, registration, seed, split, metric, value
    sensitivity: pd.DataFrame  # sensitivity.COLUMNS
    splits: pd.DataFrame  # SPLIT_COLUMNS: evaluated patients and lesion boxes per run and split
    n_boot: int
    seed: int
    min_boxes: int
    notes: list[str] = field(default_factory=list)


def estimate(
    runs: RunSet,
    n_boot: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    min_boxes: int = MIN_LESION_BOXES,
    level: float = CI_LEVEL,
    cells: Sequence[tuple[str, str]] = METRICS,
) -> Estimates:
    """AP and eq. 6 sensitivity of ``runs`` (one cohort) with intervals from ``n_boot`` resamples.

    ``n_boot=0`` gives the values without intervals; ``cells``: the (split, metric) cells of
    the sensitivity frame (default the paper's eight, plus their average). Raises ValueError
    naming the file when a predictions table is malformed.
    """
    if n_boot < 0:
        raise ValueError(f"bootstrap resamples must be >= 0, got {n_boot}")
    if seed < 0:
        raise ValueError(f"bootstrap seed must be >= 0, got {seed}")
    notes: list[str] = []
    evaluators: list[tuple[Run, str, Evaluator]] = []
    ap_rows, split_rows = [], []
    for run in runs.runs:
        for split in SPLITS:
            ev = _evaluator(run, split)
            if ev is not None:
                evaluators.append((run, split, ev))
                values = {k: 100.0 * v for k, v in ev.average_precisions(AP_KEYS).items()}
                counts = (len(ev.group_names), ev.n_gt)
            else:
                values = _stored(run, split)
                stored = run.metrics.get(split)
                stored = stored if isinstance(stored, dict) else {}
                counts = (stored.get("n_patients"), stored.get("n_gt"))
                if values and n_boot:
                    notes.append(f"{run.path}: no predictions_{split}.csv, so no interval")
            for key, value in values.items():
                ap_rows.append((run.model, run.variant, run.seed, split, key, value))
            if values:
                split_rows.append((run.model, run.variant, run.seed, split, *counts))
    replicates = _replicates(evaluators, n_boot, seed) if n_boot else {}
    per_seed = pd.DataFrame(
        ap_rows, columns=["model", "registration", "seed", "split", "metric", "value"]
    )
    splits = pd.DataFrame(split_rows, columns=list(SPLIT_COLUMNS))
    boxes = {
        (r.model, r.registration, r.seed, r.split): int(r.lesion_boxes)
        for r in splits.itertuples()
        if pd.notna(r.lesion_boxes)
    }
    return Estimates(
        ap=_ap_summary(per_seed, replicates, level),
        ap_per_seed=per_seed,
        sensitivity=sensitivity_frame(per_seed, replicates, boxes, min_boxes, level, cells),
        splits=splits,
        n_boot=n_boot,
        seed=seed,
        min_boxes=min_boxes,
        notes=notes,
    )


def _evaluator(run: Run, split: str) -> Evaluator | None:
    path = run.predictions(split)
    if path is None:
        return None
    threshold = run.config.get("eval", {}).get("score_threshold", SCORE_THRESHOLD)
    try:
        return Evaluator.from_frame(pd.read_csv(path), score_threshold=threshold)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: unreadable predictions table ({err})") from None


def _stored(run: Run, split: str) -> dict[str, float]:
    """AP (%) from ``metrics.json`` (checked by :func:`benchmark.analysis.runs.collect_runs`)."""
    stored = run.metrics.get(split)
    if not isinstance(stored, dict):
        return {}
    return {
        k: 100.0 * float(stored[k])
        for k in AP_KEYS
        if isinstance(stored.get(k), int | float) and stored[k] == stored[k]
    }


def _replicates(evaluators: list[tuple[Run, str, Evaluator]], n_boot: int, seed: int) -> dict:
    """AP (%) per resample for every (model, registration, seed, split, metric).

    One set of resamples per (run seed, split) over the patients of that split in all runs, so
    all runs of a seed are paired.
    """
    patients: dict[str, set] = {split: set() for split in SPLITS}
    for _, split, ev in evaluators:
        patients[split].update(ev.group_names)
    draws: dict[tuple[int, str], np.ndarray] = {}
    out = {}
    for run, split, ev in evaluators:
        names = sorted(patients[split])
        key = (run.seed, split)
        if key not in draws:
            draws[key] = patient_draws(len(names), n_boot, [seed, run.seed, SPLITS.index(split)])
        reps = ev.replicates(AP_KEYS, draws[key], names)
        for metric, values in reps.items():
            out[(run.model, run.variant, run.seed, split, metric)] = 100.0 * values
    return out


def _ap_summary(per_seed: pd.DataFrame, replicates: dict, level: float) -> pd.DataFrame:
    rows = []
    keys = ["model", "registration", "split", "metric"]
    for (model, reg, split, metric), part in per_seed.groupby(keys, sort=False):
        values = part["value"].to_numpy(float)
        reps = [replicates.get((model, reg, k, split, metric)) for k in part["seed"]]
        low, high = (
            percentile_ci(np.concatenate(reps), level)
            if all(r is not None for r in reps)
            else (np.nan, np.nan)
        )
        std = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
        rows.append((model, reg, split, metric, float(values.mean()), low, high, std, len(values)))
    return pd.DataFrame(rows, columns=list(AP_COLUMNS))
