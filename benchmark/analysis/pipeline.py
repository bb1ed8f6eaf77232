"""``analyze``, ``analyze --published`` and ``compare``: runs + published tables -> files.

Each step writes what the available runs allow and records what is missing; a partial run
folder yields partial tables, never an exception (bad input still raises, naming the file).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.analysis import figures, published, tables
from benchmark.analysis.audit import audit_published
from benchmark.analysis.facts import run_facts
from benchmark.analysis.published import AVERAGE, METRICS, REGISTRATIONS, VARIANT_LABELS
from benchmark.analysis.runs import RunSet, collect_runs
from benchmark.analysis.sensitivity import (
    bootstrap_replicates,
    percentile_ci,
    sensitivity_frame,
)
from benchmark.atomic import write_json, write_text

log = logging.getLogger(__name__)
PUBLISHED_S2 = "published (Table S2)"
YOUR_RUNS = "your runs"
PAPER_PROTOCOL = (
    "Published numbers: 280 real patients (10 in the test split), 300 px input, 60k iterations; "
    "the paper gives no confidence intervals."
)


@dataclass
class Analysis:
    """What an analysis wrote and what it could not produce."""

    out: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> paper layout
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "out": str(self.out),
            "tables": sorted(self.tables),
            "files": [str(p) for p in self.files + self.figures],
            "missing": self.missing,
            "notes": self.notes,
        }


def model_labels(
    models: list[str], pub_root: str | os.PathLike[str] | None = None
) -> dict[str, str]:
    """Paper row labels: published Table I / S1 labels, else the registry's ``paper_row``."""
    labels = published.row_labels(published.load_ap(pub_root))
    unknown = [m for m in models if m not in labels]
    for model in unknown:
        try:
            from models.registry import info

            labels[model] = info(model).paper_row or model
        except Exception as err:  # noqa: BLE001 - a label is cosmetic; never stop the analysis
            log.warning("no paper row for model %s (%s); using its name", model, err)
            labels[model] = model
    return labels


def analyze_runs(
    runs_root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cohort: str | None = None,
    with_published: bool = True,
    bootstrap: int = 0,
    seed: int = 0,
    pub_root: str | os.PathLike[str] | None = None,
) -> Analysis:
    """Tables I, II, III, S1, S2 beside the published ones and Fig. 5 for a run folder."""
    runs = collect_runs(runs_root).select(cohort)
    result = Analysis(Path(out))
    result.missing += runs.problems
    ap = runs.ap_frame()
    labels = model_labels(runs.models, pub_root)
    if ap.empty:
        result.missing.append(f"{runs.root}: no finished run with AP values")
    _paper_tables(result, ap, labels, pub_root)
    sens = _sensitivity(result, runs, ap, bootstrap, seed)
    _table_s2(result, sens, labels, pub_root)
    _table2(result, runs, pub_root)
    bars = _average_rows(sens, runs).assign(source=YOUR_RUNS)
    if with_published and not bars.empty:
        pub = published.load_table("S2", pub_root)
        bars = pd.concat([bars, pub[pub["metric"] == AVERAGE[1]].assign(source=PUBLISHED_S2)])
    if bars.empty:
        result.missing.append(
            "Fig. 5: no model has all eight sensitivities of the average (needs unregistered and "
            "registered runs, and registered AP > 0 where eq. 6 divides by it)"
        )
    else:
        caption = f"Your runs: {run_facts(runs).line()}."
        if with_published:
            caption += f" {PAPER_PROTOCOL}"
        result.figures += figures.fig5(bars, result.out / "fig5", labels, caption=caption)
    _missing_models(result, runs, pub_root)
    _finish(result)
    return result


def analyze_published(
    out: str | os.PathLike[str], pub_root: str | os.PathLike[str] | None = None
) -> Analysis:
    """S2 and Fig. 5 regenerated from the published Tables I and S1, and the paper audit."""
    result = Analysis(Path(out))
    ap = published.load_ap(pub_root)
    labels = published.row_labels(ap)
    sens = sensitivity_frame(ap)
    spec = tables.SPECS["S2"]
    frame = tables.comparison(spec, sens, published.load_table("S2", pub_root), labels)
    layout = tables.layout(frame, spec)
    layout["value"] = layout["value"].replace(
        {"ours": "recomputed (I + S1)", "published": "printed"}
    )
    result.tables["S2"] = layout
    result.files += tables.write_table(
        layout,
        result.out / "tableS2",
        "Table S2 recomputed with eq. 6 from Tables I and S1",
        tables.groups_of(spec),
    )
    audit = audit_published(pub_root)
    write_text(result.out / "audit.md", audit.to_markdown())
    write_text(result.out / "audit_cells.csv", audit.cells.to_csv(index=False, float_format="%.4f"))
    write_json(
        result.out / "audit.json",
        {
            "findings": [vars(f) for f in audit.findings],
            "inconsistent_cells": audit.inconsistent[
                ["registration", "model", "row_label", "split", "metric", "printed", "recomputed"]
            ].to_dict("records"),
            "claims": [{"claim": c, "holds": ok, "detail": d} for c, ok, d in audit.checks],
        },
    )
    result.files += [result.out / n for n in ("audit.md", "audit_cells.csv", "audit.json")]
    result.notes += [f"{f.title} ({f.where}): {f.message}" for f in audit.findings]
    pub = published.load_table("S2", pub_root)
    recomputed = sens[sens["metric"] == AVERAGE[1]].assign(source="recomputed from Tables I + S1")
    bars = pd.concat([pub[pub["metric"] == AVERAGE[1]].assign(source=PUBLISHED_S2), recomputed])
    result.figures += figures.fig5(bars, result.out / "fig5", labels, caption=PAPER_PROTOCOL)
    _finish(result)
    return result


def compare(
    runs_root: str | os.PathLike[str],
    model: str,
    out: str | os.PathLike[str],
    *,
    cohort: str | None = None,
    pub_root: str | os.PathLike[str] | None = None,
) -> Analysis:
    """Rank ``model``'s average sensitivity among the published ones; its AP beside Table I."""
    runs = collect_runs(runs_root).select(cohort)
    if model not in runs.models:
        raise ValueError(
            f"{runs.root}: no finished run of model {model!r}; found {', '.join(runs.models) or 'none'}"
        )
    result = Analysis(Path(out))
    result.missing += runs.missing([model])
    ap = runs.ap_frame()
    ap = ap[ap["model"] == model]
    labels = model_labels([model], pub_root)
    mine_label = f"{labels.get(model, model)} (yours)"
    yours = f"{model} (yours)"  # a key of its own: the model may be one of the paper's
    labels[yours] = mine_label
    pub_s2 = published.load_table("S2", pub_root)
    pub_avg = pub_s2[pub_s2["metric"] == AVERAGE[1]]
    sens = sensitivity_frame(ap)
    mine = sens[sens["metric"] == AVERAGE[1]].assign(model=yours)
    ranks = []
    for reg in REGISTRATIONS:
        rows = [
            (r.row_label, r.value, "published")
            for r in pub_avg[pub_avg["registration"] == reg].itertuples()
        ]
        rows += [
            (mine_label, r.value, "yours") for r in mine[mine["registration"] == reg].itertuples()
        ]
        frame = pd.DataFrame(rows, columns=["Methods", "average sensitivity (%)", "source"])
        frame = frame.sort_values("average sensitivity (%)", kind="stable").reset_index(drop=True)
        frame.insert(0, "rank", np.arange(1, len(frame) + 1))
        frame.insert(0, "section", f"{VARIANT_LABELS[reg]} Method")
        ranks.append(frame)
        if not (frame["source"] == "yours").any():
            result.missing.append(
                f"{model}: no average {reg} sensitivity (needs unregistered and {reg} runs "
                f"and all eight {reg} AP > 0)"
            )
    rank = pd.concat(ranks, ignore_index=True)
    result.tables["rank"] = rank
    result.files += tables.write_table(
        rank,
        result.out / f"rank_{model}",
        f"Average sensitivity of {mine_label} among the paper's models",
        [],
        flag_above=tables.EXTREME,
    )
    t1 = published.load_table("I", pub_root)
    unreg = ap[ap["registration"] == "unregistered"].assign(registration="unregistered")
    spec = tables.SPECS["I"]
    wide = published.wide(t1, ("row_label",)).reset_index()
    wide.columns = ["Methods", *[tables.header(s, m) for s, m in wide.columns[1:]]]
    ours = unreg.groupby(["split", "metric"])["value"].mean()
    row = {"Methods": mine_label}
    row |= {tables.header(s, m): ours.get((s, m), np.nan) for s, m in spec.columns}
    table1 = pd.concat([wide, pd.DataFrame([row])], ignore_index=True)
    result.tables["I"] = table1
    result.files += tables.write_table(
        table1,
        result.out / f"table1_{model}",
        f"AP (%) of {mine_label} beside the published Table I",
        tables.groups_of(spec),
    )
    bars = pd.concat(
        [
            pub_avg.assign(source="published (Table S2) and yours"),
            _average_rows(sens, runs)
            .query("model == @model")
            .assign(model=yours, source="published (Table S2) and yours"),
        ]
    )
    caption = f"Yours: {run_facts(runs).line()}. {PAPER_PROTOCOL}"
    result.figures += figures.fig5(
        bars, result.out / f"fig5_{model}", labels, highlight=yours, caption=caption
    )
    _finish(result)
    return result


def _paper_tables(result: Analysis, ap: pd.DataFrame, labels: dict, pub_root) -> None:
    mean = ap.groupby(["model", "registration", "split", "metric"], as_index=False)["value"].mean()
    for name, title in (
        ("I", "Table I: AP (%) on the unregistered cohort, ours vs published"),
        ("S1", "Table S1: AP (%) on the registered cohorts, ours vs published"),
        ("III", "Table III: ablations, AP (%) on the unregistered cohort, ours vs published"),
    ):
        spec = tables.SPECS[name]
        pub = published.load_table(name, pub_root)
        mine = mean[mean["registration"].isin(spec.registrations)]
        if name == "III":
            ablations = set(pub["model"]) - set(published.load_table("I", pub_root)["model"])
            if not set(mine["model"]) & ablations:
                result.missing.append("Table III: no ablation runs (e.g. gssd_pp_no_dc)")
                continue
        if mine.empty:
            result.missing.append(f"Table {name}: no runs on {', '.join(spec.registrations)}")
            continue
        _write(result, name, spec, tables.comparison(spec, mine, pub, labels), title)


def _sensitivity(
    result: Analysis, runs: RunSet, ap: pd.DataFrame, n_boot: int, seed: int
) -> pd.DataFrame:
    sens = sensitivity_frame(ap)
    if n_boot > 0 and not sens.empty:
        sens = sens.merge(_bootstrap(result, runs, n_boot, seed), how="left")
    if not sens.empty:
        path = result.out / "sensitivity.csv"
        write_text(path, sens.to_csv(index=False, float_format="%.4f"))
        result.files.append(path)
    return sens


def _bootstrap(result: Analysis, runs: RunSet, n_boot: int, seed: int) -> pd.DataFrame:
    """Paired patient-bootstrap CI per model, registration and metric (lowest common seed)."""
    by_key = {(r.model, r.variant, r.seed): r for r in runs.runs}
    rows = []
    for model, reg in sorted({(m, v) for m, v, _ in by_key if v in REGISTRATIONS}):
        paired = sorted(
            k
            for m, v, k in by_key
            if (m, v) == (model, reg) and (model, "unregistered", k) in by_key
        )
        if not paired:
            continue
        k = paired[0]
        base = by_key[(model, "unregistered", k)]
        reps: dict[tuple[str, str], np.ndarray] = {}
        for split in ("val", "test"):
            a, b = base.predictions(split), by_key[(model, reg, k)].predictions(split)
            if a is None or b is None:
                result.missing.append(f"{model} {reg} seed{k}: no predictions_{split}.csv for CIs")
                continue
            keys = [m for s, m in METRICS if s == split]
            out = bootstrap_replicates(pd.read_csv(a), pd.read_csv(b), keys, n_boot, seed)
            reps |= {(split, m): v for m, v in out.items()}
        for (split, metric), values in reps.items():
            rows.append((model, reg, split, metric, *percentile_ci(values)))
        if len(reps) == len(METRICS):
            rows.append(
                (model, reg, *AVERAGE, *percentile_ci(np.mean(list(reps.values()), axis=0)))
            )
    columns = ["model", "registration", "split", "metric", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns)


def _average_rows(sens: pd.DataFrame, runs: RunSet) -> pd.DataFrame:
    """The Fig. 5 averages of ``sens``, plus an undefined (NaN) row for every model and
    registration run beside its unregistered twin whose average eq. 6 cannot give."""
    rows = sens[sens["metric"] == AVERAGE[1]]
    have = {(r.model, r.variant) for r in runs.runs}
    drawn = set(zip(rows["model"], rows["registration"], strict=True))
    undefined = [
        (model, reg, *AVERAGE, np.nan, "a registered AP of the eight metrics is 0")
        for model in runs.models
        for reg in REGISTRATIONS
        if {(model, reg), (model, "unregistered")} <= have and (model, reg) not in drawn
    ]
    columns = ["model", "registration", "split", "metric", "value", "undefined_reason"]
    return pd.concat([rows, pd.DataFrame(undefined, columns=columns)], ignore_index=True)


def _table_s2(result: Analysis, sens: pd.DataFrame, labels: dict, pub_root) -> None:
    if sens.empty:
        result.missing.append("Table S2: no model has both an unregistered and a registered run")
        return
    spec = tables.SPECS["S2"]
    frame = tables.comparison(spec, sens, published.load_table("S2", pub_root), labels)
    _write(result, "S2", spec, frame, "Table S2: sensitivity (%, eq. 6), ours vs published")


def _table2(result: Analysis, runs: RunSet, pub_root) -> None:
    pub = published.load_table("II", pub_root).set_index("registration")
    found = [p / "variants" / "table2.csv" for p in runs.cohort_paths()]
    found = [p for p in found if p.is_file()]
    if not found:
        result.missing.append(
            "Table II: no <cohort>/variants/table2.csv from the registration stage"
        )
        return
    ours = pd.read_csv(found[0])
    if "variant" not in ours.columns or "liver_dice" not in ours.columns:
        raise ValueError(f"{found[0]}: needs columns 'variant' and 'liver_dice'")
    rows = []
    for r in ours.to_dict("records"):
        reg = r["variant"]
        pub_value = pub["value"].get(reg, np.nan)
        row = {
            "Methods": VARIANT_LABELS.get(reg, reg),
            "Dice ours": r["liver_dice"],
            "Dice published": pub_value,
            "Dice difference": r["liver_dice"] - pub_value,
        }
        row |= {
            c: v for c, v in r.items() if c not in ("variant", "liver_dice", "liver_dice_published")
        }
        rows.append(row)
    table = pd.DataFrame(rows)
    result.tables["II"] = table
    result.files += tables.write_table(
        table, result.out / "table2", f"Table II: liver Dice between phases ({found[0]})", [], 4
    )


def _write(
    result: Analysis, name: str, spec: tables.TableSpec, frame: pd.DataFrame, title: str
) -> None:
    layout = tables.layout(frame, spec)
    result.tables[name] = layout
    result.files += tables.write_table(
        layout,
        result.out / f"table{name}",
        title,
        tables.groups_of(spec),
        flag_above=spec.flag_above,
    )


def _missing_models(result: Analysis, runs: RunSet, pub_root) -> None:
    result.missing += runs.missing(runs.models)
    paper = published.row_labels(published.load_ap(pub_root))
    absent = [m for m in paper if m not in runs.models]
    if absent:
        result.missing.append(f"paper models without runs: {', '.join(absent)}")


def _finish(result: Analysis) -> None:
    lines = ["# Analysis", "", "## Written", ""]
    lines += [f"- {p.name}" for p in result.files + result.figures] or ["- nothing"]
    lines += ["", "## Missing", ""] + ([f"- {m}" for m in result.missing] or ["- nothing"])
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    write_text(result.out / "README.md", "\n".join(lines) + "\n")
    write_json(result.out / "summary.json", result.summary())
