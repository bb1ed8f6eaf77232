"""A robustness ladder from start to end: level cohorts, training units, analysis, outputs.

Layout (``docs/robustness.md``)::

    WORK/robustness/<ladder>-motion<L>mm/        one complete cohort per level
    RUNS/robustness/<ladder>/
      <ladder>-motion<L>mm/unregistered/<model>/seed<k>/   run folders (docs/run-folder.md)
      levels.csv  summary.csv  pairs.csv  misalignment.csv  summary.json  ladder.png

Each level is an ordinary cohort and each (level, model, seed) an ordinary training unit of
:func:`benchmark.runner.run_unit`, so the executors of ``run`` train them (resumable, in
parallel on several GPUs or a Ray cluster) and finished units are skipped on a rerun. The
level cohorts are used as they are (variant ``unregistered``): the misalignment is the level's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import run_folder, runner
from benchmark.atomic import atomic_path, read_json, write_json
from benchmark.cohort import MANIFEST, UNREGISTERED, Cohort, open_variant
from benchmark.config import profile_label
from benchmark.robustness.analysis import LadderResult, analyse_ladder
from benchmark.robustness.deformation import deform_cohort
from benchmark.robustness.figure import FIGURE, ladder_figure
from benchmark.robustness.levels import (
    LADDER_DIR,
    ensure_phantom_levels,
    level_cohort_dir,
    level_name,
)
from benchmark.robustness.misalignment import cohort_misalignment

SOURCE_VARIANT = "nonrigid"
"""The variant of an imported cohort that a ladder deforms (its best-aligned data)."""


@dataclass(frozen=True)
class LadderPlan:
    """The level cohorts of one ladder."""

    name: str
    source: str  # "phantom" or the imported cohort's folder
    cohorts: dict[float, Path]


def plan_phantom(config: dict[str, Any], levels: Sequence[float], work: Path) -> LadderPlan:
    """The profile's phantom drawn once per level (made when missing)."""
    name, roots = ensure_phantom_levels(config, list(levels), Path(work))
    return LadderPlan(name, "phantom", roots)


def plan_deformed(
    config: dict[str, Any],
    cohort: Path,
    levels: Sequence[float],
    work: Path,
    seed: int,
    executor: Any = None,
) -> LadderPlan:
    """The cohort's non-rigid variant (registered when missing) deformed once per level."""
    runner.ensure_variant(Path(cohort), SOURCE_VARIANT, config["registration"]["workers"], executor)
    source = open_variant(cohort, SOURCE_VARIANT)
    name = f"{source.name}-{SOURCE_VARIANT}"
    roots = {}
    for level in levels:
        root = level_cohort_dir(Path(work), name, level)
        if not (root / MANIFEST).exists():
            deform_cohort(source, root, root.name, level, seed)
        roots[level] = root
    return LadderPlan(name, str(Path(cohort).resolve()), roots)


def ladder_dir(runs: Path, plan: LadderPlan) -> Path:
    return Path(runs) / LADDER_DIR / plan.name


def unit_configs(
    config: dict[str, Any],
    plan: LadderPlan,
    model_names: Sequence[str],
    seeds: Sequence[int],
    runs: Path,
) -> list[tuple[float, dict[str, Any]]]:
    """``(level, unit config)`` of every unit, level by level."""
    out = ladder_dir(runs, plan)
    return [
        (level, runner.unit_config(config, root, UNREGISTERED, model, seed, out))
        for level, root in plan.cohorts.items()
        for model in model_names
        for seed in seeds
    ]


def measure(plan: LadderPlan, split: str) -> pd.DataFrame:
    """True misalignment per level, patient of ``split`` and moving phase."""
    frames = []
    for level, root in plan.cohorts.items():
        cohort = Cohort(root)
        frame = cohort_misalignment(cohort, cohort.split_ids(split))
        frames.append(frame.assign(level_mm=level))
    return pd.concat(frames, ignore_index=True)


def summarise(
    config: dict[str, Any],
    plan: LadderPlan,
    units: list[tuple[float, dict[str, Any]]],
    runs: Path,
    *,
    split: str,
    metric: str,
    n_boot: int,
) -> tuple[LadderResult, Path]:
    """Analyse the finished units; write tables, facts and the figure; returns the result and
    the ladder folder."""
    frame = pd.DataFrame(
        [(c["model"], float(level), c["seed"], str(run_folder.unit_dir(c))) for level, c in units],
        columns=["model", "level", "seed", "path"],
    )
    measured = measure(plan, split)
    x = measured.groupby("level_mm")["mm"].mean().to_dict()
    seeds = sorted(set(frame["seed"]))
    result = analyse_ladder(frame, x, split=split, metric=metric, n_boot=n_boot, seed=seeds[0])
    first = Cohort(next(iter(plan.cohorts.values())))
    result.facts.update(
        ladder=plan.name,
        source=plan.source,
        cohort_kind=first.kind,
        cohorts={level_name(level): str(root) for level, root in plan.cohorts.items()},
        profile=config.get("profile"),
        settings={
            "input_size": config["detector"]["input_size"],
            "width": config["detector"]["width"],
            "iterations": config["train"]["iterations"],
            "batch_size": config["train"]["batch_size"],
        },
        models=list(dict.fromkeys(frame["model"])),
        devices=sorted({read_json(Path(p) / run_folder.METRICS).get("device", "?") for p in frame["path"]}),
        misalignment_region=sorted(set(measured["region"])),
    )
    out = ladder_dir(runs, plan)
    _write_csv(result.levels, out / "levels.csv")
    _write_csv(result.summary, out / "summary.csv")
    _write_csv(result.pairs, out / "pairs.csv")
    _write_csv(measured, out / "misalignment.csv")
    write_json(out / "summary.json", result.facts)
    ladder_figure(
        result.levels, result.summary, f"{metric}, {split} split", note(result.facts), out / FIGURE
    )
    return result, out


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def note(facts: dict[str, Any]) -> str:
    """One line of facts to judge the numbers by (a profile file by its name; ``summary.json``
    keeps its path)."""
    boxes = "/".join(str(b) for b in facts["lesion_boxes"])
    settings = facts["settings"]
    return (
        f"ladder {facts['ladder']} ({facts['cohort_kind']}), "
        f"profile {profile_label(facts['profile'])} "
        f"(input {settings['input_size']}, width {settings['width']:g}, "
        f"{settings['iterations']} iterations at batch {settings['batch_size']}, "
        f"device {', '.join(facts['devices'])}); "
        f"{facts['split']} split: {facts['patients']} patients, {boxes} lesion boxes; "
        f"seeds {', '.join(str(s) for s in facts['seeds'])}; "
        f"{facts['bootstrap']} paired patient-bootstrap replicates"
    )


def _cell(value: float, low: float, high: float, scale: float = 100.0, digits: int = 1) -> str:
    if not math.isfinite(value):
        return "n/a"
    ci = (
        "[n/a]"
        if not (math.isfinite(low) and math.isfinite(high))
        else (f"[{scale * low:.{digits}f}, {scale * high:.{digits}f}]")
    )
    return f"{scale * value:.{digits}f} {ci}"


def format_result(result: LadderResult) -> str:
    """The tables ``robustness`` prints: AP per level and mPC / rPC per model, with CIs."""
    facts = result.facts
    levels = result.levels
    columns = {}
    for level, rows in levels.groupby("level_mm", sort=True):
        mm = rows["misalignment_mm"].iloc[0]
        columns[f"level {level:g} ({mm:.1f} mm)"] = {
            r.model: _cell(r.ap, r.ap_low, r.ap_high) for r in rows.itertuples()
        }
    ap = pd.DataFrame(columns)
    ap.index.name = "model"
    summary = pd.DataFrame(
        {
            "AP level 0": [
                _cell(r.ap0, r.ap0_low, r.ap0_high) for r in result.summary.itertuples()
            ],
            "mPC": [_cell(r.mpc, r.mpc_low, r.mpc_high) for r in result.summary.itertuples()],
            "rPC": [
                _cell(r.rpc, r.rpc_low, r.rpc_high, scale=1.0, digits=2)
                for r in result.summary.itertuples()
            ],
            "AP lost at the largest level": [
                _cell(r.drop, r.drop_low, r.drop_high) for r in result.summary.itertuples()
            ],
            "same predictions at every level": [
                "yes" if v else "no" for v in result.summary["identical_predictions"]
            ],
        },
        index=pd.Index(result.summary["model"], name="model"),
    )
    pairs = pd.DataFrame(
        {
            "AP lost: difference": [
                _cell(r.drop_diff, r.drop_diff_low, r.drop_diff_high)
                for r in result.pairs.itertuples()
            ],
            "rPC: difference": [
                _cell(r.rpc_diff, r.rpc_diff_low, r.rpc_diff_high, scale=1.0, digits=2)
                for r in result.pairs.itertuples()
            ],
        },
        index=pd.Index(
            [f"{r.model} - {r.other}" for r in result.pairs.itertuples()], name="models"
        ),
    )
    return "\n".join(
        [
            f"AP (%) {facts['metric']} on the {facts['split']} split per level (nominal level, "
            "measured true misalignment over the liver), 95% CI:",
            ap.to_string(),
            "",
            "mPC = mean AP (%) over the non-zero levels; rPC = mPC / AP at level 0 "
            "(1 = no loss); AP lost = AP at level 0 - AP at the largest level (paired); 95% CI:",
            summary.to_string(),
            "",
            "Model against model (first minus second; paired replicates): a negative AP-lost "
            "difference and a positive rPC difference mean the first loses less to misalignment:",
            pairs.to_string() if len(pairs) else "(one model: no pairs)",
            "",
            note(facts),
        ]
    )


def run_ladder(
    config: dict[str, Any],
    levels: Sequence[float],
    model_names: Sequence[str],
    seeds: Sequence[int],
    *,
    cohort: Path | None,
    runs: Path,
    work: Path,
    executor: Any,
    report: Callable[[str], None] = print,
    deform_seed: int = 0,
    split: str = "test",
    metric: str = "IoU50",
    n_boot: int = 1000,
) -> tuple[LadderResult, Path]:
    """Make the level cohorts, train every (level, model, seed) unit, analyse; see the module
    docstring for the folders."""
    start = time.perf_counter()
    plan = (
        plan_phantom(config, levels, work)
        if cohort is None
        else plan_deformed(config, cohort, levels, work, deform_seed, executor)
    )
    report(f"ladder {plan.name}: {len(plan.cohorts)} level cohorts ready")
    units = unit_configs(config, plan, model_names, seeds, runs)
    runner.train_units([config for _, config in units], executor, report)
    result, out = summarise(config, plan, units, runs, split=split, metric=metric, n_boot=n_boot)
    report(f"ladder finished in {time.perf_counter() - start:.0f} s")
    return result, out
