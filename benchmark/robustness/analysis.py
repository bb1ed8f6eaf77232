"""AP along a misalignment ladder, mPC and rPC, with paired patient-bootstrap CIs.

Robustness summaries as in the corruption-robustness literature for detection (Michaelis et
al., 2019): ``mPC`` is the mean AP over the non-zero levels, ``rPC = mPC / AP(level 0)`` the
share of the clean (perfectly aligned) performance that survives misalignment (1 = no loss).
``drop`` is the AP lost at the largest level, ``AP(level 0) - AP(largest level)``: the positive
control's quantity (a multiphase model must lose AP there, with an interval above 0).
Pairs of models compare ``drop`` and ``rPC`` (model minus other): a negative ``drop_diff`` and a
positive ``rpc_diff`` say that the model loses less to misalignment than the other (the paper's
claim for GSSD++ against GSSD).

Uncertainty: every level holds the same test patients, so one bootstrap replicate draws the
patients with replacement ONCE and re-weights the predictions of every level, model and seed
with that draw (:func:`benchmark.evaluation.average_precision` with per-detection weights, the
matching fixed per image). Level-to-level differences, mPC and rPC are therefore judged against
the patient sample they share, not against independent draws. With several seeds the AP of a
replicate is the mean over seeds (the CI covers the patient sample; ``seed_sd`` reports the
spread over seeds). Intervals are 95% percentile intervals of the finite replicates; a value
that cannot be formed (rPC with AP 0 at level 0) is NaN and printed as ``n/a``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmark.evaluation import Evaluator, parse_metric, patient_draws

LEVEL_COLUMNS = (
    "model",
    "level_mm",
    "misalignment_mm",
    "ap",
    "ap_low",
    "ap_high",
    "seed_sd",
    "n_seeds",
)
SUMMARY_COLUMNS = (
    "model",
    "ap0",
    "ap0_low",
    "ap0_high",
    "mpc",
    "mpc_low",
    "mpc_high",
    "rpc",
    "rpc_low",
    "rpc_high",
    "drop",
    "drop_low",
    "drop_high",
    "identical_predictions",
)
PAIR_COLUMNS = (
    "model",
    "other",
    "drop_diff",
    "drop_diff_low",
    "drop_diff_high",
    "rpc_diff",
    "rpc_diff_low",
    "rpc_diff_high",
)
Estimate = tuple[float, np.ndarray]
"""A point value and its paired bootstrap replicates."""


@dataclass
class LadderResult:
    """Per model and level (:data:`LEVEL_COLUMNS`), per model (:data:`SUMMARY_COLUMNS`), per
    pair of models (:data:`PAIR_COLUMNS`), facts."""

    levels: pd.DataFrame
    summary: pd.DataFrame
    pairs: pd.DataFrame
    facts: dict[str, Any] = field(default_factory=dict)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the finite ``values`` (NaN, NaN when none)."""
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


def analyse_ladder(
    units: pd.DataFrame,
    misalignment_mm: dict[float, float],
    *,
    split: str = "test",
    metric: str = "IoU50",
    n_boot: int = 1000,
    seed: int = 0,
) -> LadderResult:
    """``units``: one row per finished unit with ``model, level, seed, path`` (run folder).

    ``misalignment_mm``: the measured misalignment of each level (the x axis).
    """
    parse_metric(metric)  # an unknown key fails here, naming the valid ones
    if n_boot < 1:
        raise ValueError(f"the ladder needs bootstrap replicates for its CIs, got {n_boot}")
    evals: dict[tuple[str, float, int], Evaluator] = {}
    files: dict[tuple[str, float, int], bytes] = {}
    for row in units.itertuples(index=False):
        path = Path(row.path) / f"predictions_{split}.csv"
        if not path.is_file():
            raise ValueError(f"{path}: missing; the unit did not finish")
        files[(row.model, row.level, row.seed)] = path.read_bytes()
        evals[(row.model, row.level, row.seed)] = Evaluator.from_frame(pd.read_csv(path))
    patients = _shared_patients(evals)
    draws = patient_draws(len(patients), n_boot, seed)
    point: dict[tuple[str, float, int], float] = {}
    reps: dict[tuple[str, float, int], np.ndarray] = {}
    for key, ev in evals.items():
        point[key] = ev.average_precisions([metric])[metric]
        reps[key] = ev.replicates([metric], draws, patients)[metric]
    models = list(dict.fromkeys(units["model"]))
    levels = sorted(set(units["level"]))
    seeds = sorted(set(units["seed"]))
    level_rows, summary_rows = [], []
    robustness: dict[str, dict[str, Estimate]] = {}
    for model in models:
        by_level = {}
        for level in levels:
            keys = [(model, level, s) for s in seeds if (model, level, s) in point]
            aps = np.array([point[k] for k in keys])
            rep = np.mean([reps[k] for k in keys], axis=0)
            by_level[level] = (float(aps.mean()), rep)
            low, high = interval(rep)
            level_rows.append(
                (
                    model,
                    level,
                    misalignment_mm.get(level, float("nan")),
                    float(aps.mean()),
                    low,
                    high,
                    float(aps.std(ddof=1)) if len(aps) > 1 else float("nan"),
                    len(aps),
                )
            )
        robustness[model] = _robustness(by_level)
        summary_rows.append(
            (model, *_summary(robustness[model]), _identical(files, model, levels, seeds))
        )
    facts = {
        "split": split,
        "metric": metric,
        "bootstrap": n_boot,
        "bootstrap_seed": seed,
        "patients": len(patients),
        "lesion_boxes": sorted({int(ev.n_gt) for ev in evals.values()}),
        "images": sorted({int(ev.n_images) for ev in evals.values()}),
        "seeds": seeds,
        "levels_mm": levels,
    }
    return LadderResult(
        pd.DataFrame(level_rows, columns=list(LEVEL_COLUMNS)),
        pd.DataFrame(summary_rows, columns=list(SUMMARY_COLUMNS)),
        _pairs(robustness),
        facts,
    )


def _shared_patients(evals: dict[tuple[str, float, int], Evaluator]) -> np.ndarray:
    """The patients every unit was evaluated on (sorted); ValueError when units disagree."""
    sets = {tuple(ev.group_names) for ev in evals.values()}
    if len(sets) != 1:
        raise ValueError(
            "the ladder's units were evaluated on different patients "
            f"({' vs '.join(str(len(s)) for s in sets)} patients); every level must hold the "
            "same split, or the bootstrap cannot pair them"
        )
    return np.array(sets.pop())


def _robustness(by_level: dict[float, tuple[float, np.ndarray]]) -> dict[str, Estimate]:
    """AP at level 0, mPC, rPC and the AP lost at the largest level (AP at level 0 minus AP
    there), each as (point value, paired replicates); NaN where undefined."""
    nan = float("nan")
    undefined = (nan, np.full(1, nan))
    clean = by_level.get(0.0, undefined)
    shifted = [v for level, v in by_level.items() if level > 0]
    if shifted:
        mpc = (float(np.mean([v[0] for v in shifted])), np.mean([v[1] for v in shifted], axis=0))
        last = by_level[max(by_level)]
    else:
        mpc = last = undefined
    with np.errstate(divide="ignore", invalid="ignore"):
        rpc = (
            mpc[0] / clean[0] if clean[0] > 0 else nan,
            np.where(clean[1] > 0, mpc[1] / clean[1], nan),
        )
    drop = (clean[0] - last[0], clean[1] - last[1])
    return {"ap0": clean, "mpc": mpc, "rpc": rpc, "drop": drop}


def _summary(estimates: dict[str, Estimate]) -> tuple[float, ...]:
    """The summary columns of one model: each estimate with its interval."""
    return tuple(
        v for name in ("ap0", "mpc", "rpc", "drop")
        for v in (estimates[name][0], *interval(estimates[name][1]))
    )  # fmt: skip


def _pairs(robustness: dict[str, dict[str, Estimate]]) -> pd.DataFrame:
    """Every pair of models (in the order given): difference of the AP lost at the largest
    level and of rPC, with intervals of the paired replicates (same patient draws)."""
    rows = []
    for model, other in combinations(robustness, 2):
        row: list[Any] = [model, other]
        for name in ("drop", "rpc"):
            a, b = robustness[model][name], robustness[other][name]
            row += [a[0] - b[0], *interval(a[1] - b[1])]
        rows.append(tuple(row))
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def _identical(
    files: dict[tuple[str, float, int], bytes],
    model: str,
    levels: Sequence[float],
    seeds: Sequence[int],
) -> bool:
    """Whether the model's predictions are byte-identical at every level, seed by seed (the
    negative control: a model that reads only the portal phase, on CPU)."""
    for s in seeds:
        found = {files[(model, level, s)] for level in levels if (model, level, s) in files}
        if len(found) > 1:
            return False
    return True
