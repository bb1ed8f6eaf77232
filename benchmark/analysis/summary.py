"""The ``run`` command's summary of a matrix: AP and eq. 6 sensitivity per model, with 95 %
intervals, and the facts they rest on."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from benchmark.analysis.estimates import DEFAULT_BOOTSTRAP, Estimates, estimate
from benchmark.analysis.facts import NOT_AVAILABLE, RunFacts, format_estimate, run_facts
from benchmark.analysis.runs import load_runs
from benchmark.vocabulary import AVERAGE, METRIC_KEYS, PAPER_CELLS, UNREGISTERED


def summarise(
    run_dirs: Sequence[Path], runs: str | Path, split: str = "test", n_boot: int | None = None
) -> tuple[Estimates, RunFacts]:
    """Estimates (AP and sensitivity of every metric of ``split`` and the paper's eight, with
    95 % intervals) and the facts of the finished units in ``run_dirs``."""
    found = load_runs(list(run_dirs), runs)
    cells = list(dict.fromkeys([*((split, k) for k in METRIC_KEYS), *PAPER_CELLS]))
    est = estimate(found, DEFAULT_BOOTSTRAP if n_boot is None else n_boot, cells=cells)
    return est, run_facts(found, est)


def summary_tables(est: Estimates, variant: str, split: str = "test") -> dict[str, pd.DataFrame]:
    """Per model: AP (%) on ``variant`` and unregistered, and eq. 6 sensitivity (%), per metric
    of ``split`` plus the Fig. 5 average, as ``value [95% CI]`` text (``n/a`` when undefined).

    Each table's ``attrs["undefined"]`` lists ``(row, reason)`` of its n/a sensitivities.
    """
    ap = est.ap[est.ap["split"] == split].set_index(["model", "registration", "metric"])
    sens = est.sensitivity.set_index(["model", "registration", "split", "metric"])
    average = "average (Fig. 5)"
    out = {}
    for model in dict.fromkeys(est.ap["model"]):
        columns = {f"AP {variant}": variant}
        if variant != UNREGISTERED:
            columns["AP unregistered"] = UNREGISTERED
        rows, undefined = {}, []
        for key in METRIC_KEYS:
            row = {}
            for name, v in columns.items():
                cell = ap.loc[(model, v, key)] if (model, v, key) in ap.index else None
                row[name] = (
                    NOT_AVAILABLE
                    if cell is None
                    else format_estimate(*cell[["value", "ci_low", "ci_high"]])
                )
            rows[key] = row
        if variant != UNREGISTERED:
            for key, index in [*((k, (split, k)) for k in METRIC_KEYS), (average, AVERAGE)]:
                at = (model, variant, *index)
                if at in sens.index:
                    cell = sens.loc[at]
                    reason = cell["undefined_reason"]
                    text = format_estimate(cell["value"], cell["ci_low"], cell["ci_high"], reason)
                    if reason:
                        undefined.append((key, reason))
                else:
                    text = NOT_AVAILABLE
                rows.setdefault(key, {name: "" for name in columns})["sensitivity"] = text
        table = pd.DataFrame.from_dict(rows, orient="index")
        table.index.name = "metric"
        table.attrs["undefined"] = undefined
        out[model] = table
    return out
