"""``analyze``, ``analyze --published`` and ``compare``: runs + published tables -> files.

Each step writes what the available runs allow and records what is missing; a partial run
folder yields partial tables, never an exception (bad input still raises, naming the file).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.analysis import figures, published, tables
from benchmark.analysis.audit import audit_published
from benchmark.analysis.estimates import DEFAULT_BOOTSTRAP, Estimates, estimate
from benchmark.analysis.facts import PAPER_CAPTION, RunFacts, run_facts
from benchmark.analysis.published import AVERAGE, REGISTRATIONS, VARIANT_LABELS
from benchmark.analysis.runs import RunSet, collect_runs
from benchmark.analysis.sensitivity import MIN_LESION_BOXES, sensitivity_frame
from benchmark.atomic import write_json, write_text

log = logging.getLogger(__name__)
PUBLISHED_S2 = "published (Table S2)"
YOUR_RUNS = "your runs"
SENSITIVITY_HEADER = "average sensitivity (%)"
RANK_EXTRA = ("ci_low", "ci_high", "source", "undefined_reason")


@dataclass
class Analysis:
    """What an analysis wrote and what it could not produce."""

    out: Path
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # name -> paper layout
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    facts: RunFacts | None = None  # what the numbers rest on
    estimates: Estimates | None = None

    def summary(self) -> dict:
        out = {
            "out": str(self.out),
            "tables": sorted(self.tables),
            "files": [str(p) for p in self.files + self.figures],
            "missing": self.missing,
            "notes": self.notes,
        }
        if self.facts is not None:
            out["facts"] = self.facts.to_dict()
        if self.estimates is not None:
            out["sensitivity"] = _records(self.estimates.sensitivity)
            out["ap"] = _records(self.estimates.ap)
        return out


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
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    min_boxes: int = MIN_LESION_BOXES,
    pub_root: str | os.PathLike[str] | None = None,
) -> Analysis:
    """Tables I, II, III, S1, S2 beside the published ones and Fig. 5 for a run folder.

    Every AP and sensitivity carries a 95 % interval from ``bootstrap`` patient resamples
    (:mod:`benchmark.analysis.estimates`); ``ap.csv`` and ``sensitivity.csv`` hold them.
    """
    runs = collect_runs(runs_root).select(cohort)
    result = Analysis(Path(out))
    result.missing += runs.problems
    est = _estimate(result, runs, bootstrap, seed, min_boxes)
    ap = est.ap
    labels = model_labels(runs.models, pub_root)
    if ap.empty:
        result.missing.append(f"{runs.root}: no finished run with AP values")
    _paper_tables(result, ap, labels, pub_root)
    _write_tidy(result, "ap.csv", ap)
    sens = est.sensitivity
    _write_tidy(result, "sensitivity.csv", sens)
    _table_s2(result, sens, labels, pub_root)
    _table2(result, runs, pub_root)
    bars = sens[sens["metric"] == AVERAGE[1]].assign(source=YOUR_RUNS)
    if bars.empty:
        result.missing.append(
            "Fig. 5: no model has all eight sensitivities of the average (needs unregistered and "
            "registered runs of the same seed)"
        )
    else:
        if bars["value"].isna().all():
            result.missing.append(
                "Fig. 5: every average sensitivity of the runs is undefined (see "
                "undefined_reason in sensitivity.csv)"
            )
        caption = f"Your runs: {result.facts.line()}."
        if with_published:
            pub = published.load_table("S2", pub_root)
            pub_bars = pub[pub["metric"] == AVERAGE[1]].assign(source=PUBLISHED_S2)
            bars = pd.concat([bars, pub_bars], ignore_index=True)
            caption += f" {PAPER_CAPTION}"
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
    result.figures += figures.fig5(bars, result.out / "fig5", labels, caption=PAPER_CAPTION)
    _finish(result)
    return result


def compare(
    runs_root: str | os.PathLike[str],
    model: str,
    out: str | os.PathLike[str],
    *,
    cohort: str | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = 0,
    min_boxes: int = MIN_LESION_BOXES,
    pub_root: str | os.PathLike[str] | None = None,
) -> Analysis:
    """Rank ``model``'s average sensitivity among the published ones; its AP beside Table I.

    Tables: ``rank`` (per registration method, the published averages and yours with its 95 %
    interval; an undefined average gets no rank), ``sensitivity`` (your eight cells and the
    average, tidy, with intervals), ``I`` (your unregistered AP beside Table I).
    """
    runs = collect_runs(runs_root).select(cohort)
    if model not in runs.models:
        raise ValueError(
            f"{runs.root}: no finished run of model {model!r}; found {', '.join(runs.models) or 'none'}"
        )
    result = Analysis(Path(out))
    result.missing += runs.missing([model])
    est = _estimate(result, runs.of_models([model]), bootstrap, seed, min_boxes)
    ap = est.ap
    labels = model_labels([model], pub_root)
    mine_label = f"{labels.get(model, model)} (yours)"
    yours = f"{model} (yours)"  # a key of its own: the model may be one of the paper's
    labels[yours] = mine_label
    pub_s2 = published.load_table("S2", pub_root)
    pub_avg = pub_s2[pub_s2["metric"] == AVERAGE[1]]
    sens = est.sensitivity
    result.tables["sensitivity"] = sens
    _write_tidy(result, f"sensitivity_{model}.csv", sens)
    _write_tidy(result, f"ap_{model}.csv", ap)
    mine = sens[sens["metric"] == AVERAGE[1]].assign(model=yours)
    rank = pd.concat([_rank(reg, pub_avg, mine, mine_label) for reg in REGISTRATIONS])
    for reg in REGISTRATIONS:
        if not (mine["registration"] == reg).any():
            result.missing.append(
                f"{model}: no average {reg} sensitivity (needs unregistered and {reg} runs "
                "of the same seed)"
            )
    rank = rank.reset_index(drop=True)
    result.tables["rank"] = rank
    result.files += tables.write_table(
        rank,
        result.out / f"rank_{model}",
        f"Average sensitivity (%) of {mine_label} among the paper's models",
        [],
        flag_above=tables.EXTREME,
    )
    t1 = published.load_table("I", pub_root)
    unreg = ap[ap["registration"] == "unregistered"]
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
            mine.assign(source="published (Table S2) and yours"),
        ],
        ignore_index=True,
    )
    caption = f"Yours: {result.facts.line()}. {PAPER_CAPTION}"
    result.figures += figures.fig5(
        bars, result.out / f"fig5_{model}", labels, highlight=yours, caption=caption
    )
    _finish(result)
    return result


def _rank(reg: str, pub_avg: pd.DataFrame, mine: pd.DataFrame, mine_label: str) -> pd.DataFrame:
    """One registration's ranking: published averages and yours, lowest (most robust) first."""
    rows = [
        (r.row_label, r.value, np.nan, np.nan, "published", "")
        for r in pub_avg[pub_avg["registration"] == reg].itertuples()
    ]
    rows += [
        (mine_label, r.value, r.ci_low, r.ci_high, "yours", r.undefined_reason)
        for r in mine[mine["registration"] == reg].itertuples()
    ]
    frame = pd.DataFrame(rows, columns=["Methods", SENSITIVITY_HEADER, *RANK_EXTRA])
    frame = frame.sort_values(SENSITIVITY_HEADER, kind="stable", na_position="last")
    ranks = iter(range(1, len(frame) + 1))
    frame.insert(0, "rank", [next(ranks) if v == v else "n/a" for v in frame[SENSITIVITY_HEADER]])
    frame.insert(0, "section", f"{VARIANT_LABELS[reg]} Method")
    return frame


def _paper_tables(result: Analysis, ap: pd.DataFrame, labels: dict, pub_root) -> None:
    """Tables I, S1, III from ``ap`` (one row per cell: mean over seeds with its interval)."""
    for name, title in (
        ("I", "Table I: AP (%) on the unregistered cohort, ours vs published"),
        ("S1", "Table S1: AP (%) on the registered cohorts, ours vs published"),
        ("III", "Table III: ablations, AP (%) on the unregistered cohort, ours vs published"),
    ):
        spec = tables.SPECS[name]
        pub = published.load_table(name, pub_root)
        mine = ap[ap["registration"].isin(spec.registrations)]
        if name == "III":
            ablations = set(pub["model"]) - set(published.load_table("I", pub_root)["model"])
            if not set(mine["model"]) & ablations:
                result.missing.append("Table III: no ablation runs (e.g. gssd_pp_no_dc)")
                continue
        if mine.empty:
            result.missing.append(f"Table {name}: no runs on {', '.join(spec.registrations)}")
            continue
        _write(result, name, spec, tables.comparison(spec, mine, pub, labels), title)


def _estimate(
    result: Analysis, runs: RunSet, bootstrap: int, seed: int, min_boxes: int
) -> Estimates:
    est = estimate(runs, bootstrap, seed, min_boxes)
    result.estimates = est
    result.facts = run_facts(runs, est)
    result.missing += est.notes
    return est


def _write_tidy(result: Analysis, name: str, frame: pd.DataFrame) -> None:
    if not frame.empty:
        path = result.out / name
        write_text(path, frame.to_csv(index=False, float_format="%.4f"))
        result.files.append(path)


def _records(frame: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: NaN as null."""
    return json.loads(frame.to_json(orient="records"))


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
    lines = ["# Analysis", ""]
    if result.facts is not None:
        lines += ["## What the numbers rest on", ""]
        lines += [f"- {line}" for line in result.facts.lines()] + [""]
    lines += ["## Written", ""]
    lines += [f"- {p.name}" for p in result.files + result.figures] or ["- nothing"]
    lines += ["", "## Missing", ""] + ([f"- {m}" for m in result.missing] or ["- nothing"])
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    write_text(result.out / "README.md", "\n".join(lines) + "\n")
    write_json(result.out / "summary.json", result.summary())
