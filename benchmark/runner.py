"""The benchmark matrix: (model, variant, seed) units, each an idempotent, resumable run folder.

A unit is described completely by its resolved config (see :func:`unit_config`), so
:func:`run_unit` can run anywhere that sees the cohort and the runs folder (a local loop here,
a cluster dispatcher later). Layout of a run folder: ``docs/run-folder.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import models
from benchmark.analysis.estimates import DEFAULT_BOOTSTRAP, Estimates, estimate
from benchmark.analysis.facts import NOT_AVAILABLE, RunFacts, format_estimate, run_facts
from benchmark.analysis.published import AVERAGE, published_liver_dice
from benchmark.analysis.published import METRICS as PAPER_CELLS
from benchmark.analysis.runs import load_runs
from benchmark.atomic import read_json
from benchmark.cohort import MANIFEST, UNREGISTERED, Cohort, open_variant, variant_dir
from benchmark.dataset import LesionSliceDataset
from benchmark.evaluation import METRIC_KEYS, evaluate_frame
from benchmark.outputs import save_csv, save_json
from benchmark.phantom.config import PAPER_SPLITS, cohort_name
from benchmark.run_folder import CONFIG, METRICS, check_same, is_finished, label, log_path, unit_dir
from benchmark.training import (
    BEST,
    CHECKPOINTS,
    build_model,
    load_checkpoint,
    model_overrides,
    pick_device,
    predict,
    train,
)
from benchmark.training_progress import ProgressDisplay
from benchmark.vocabulary import RUN_VARIANTS

log = logging.getLogger(__name__)

DEFAULT_WORK = Path("work")
DEFAULT_RUNS = Path("runs")
SPLITS = ("val", "test")


# ----------------------------------------------------------------------------- names


def check_variant(variant: str) -> str:
    if variant not in RUN_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(RUN_VARIANTS)}")
    return variant


def table_one_models() -> list[str]:
    """The models of the paper's Table I, in registry order."""
    return [name for name in models.available() if models.info(name).table == "I"]


def parse_models(spec: str) -> list[str]:
    """``all`` (Table I models), ``ablations`` (Table III) or a comma list of model names."""
    known = models.available()
    if spec == "all":
        return table_one_models()
    if spec == "ablations":
        return [n for n in known if models.info(n).table == "III"]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown) or repr(spec)}; use all, ablations or a comma "
            f"list of: {', '.join(known)}"
        )
    return names


# ----------------------------------------------------------------------------- cohorts


def default_cohort_dir(config: dict[str, Any], work: Path = DEFAULT_WORK) -> Path:
    """Where the profile's synthetic cohort lives: named after its phantom settings."""
    ph = config["phantom"]
    name = cohort_name(ph)
    if ph.get("motion_mm") is not None:
        name += f"-motion{ph['motion_mm']:g}mm"
    return work / "cohorts" / name


def ensure_cohort(
    config: dict[str, Any], cohort: str | Path | None, work: Path = DEFAULT_WORK
) -> Path:
    """The cohort folder to use; with ``cohort=None`` the default synthetic one (made if missing)."""
    if cohort is not None:
        Cohort(cohort)  # raises a clear error when it is not a complete cohort
        return Path(cohort)
    root = default_cohort_dir(config, work)
    if not (root / MANIFEST).exists():
        from benchmark.phantom import DEFAULT_MOTION_MM, PhantomConfig, synthesize

        ph = config["phantom"]
        motion = DEFAULT_MOTION_MM if ph.get("motion_mm") is None else ph["motion_mm"]
        phantom = PhantomConfig(size=ph["size"], slices=ph["slices"], motion_mm=motion)
        log.info("creating the synthetic cohort %s", root)
        splits = tuple(ph.get("splits") or PAPER_SPLITS)
        synthesize(root, ph["patients"], ph["seed"], phantom, workers=ph["workers"], splits=splits)
    return root


def ensure_variant(
    cohort_root: Path, variant: str, workers: int = 1, executor: Any = None
) -> Cohort:
    """Open the registered variant, registering the cohort first when it is missing.

    A ``remote`` executor (``benchmark.executors``, e.g. Ray) registers the patients as tasks.
    Whenever a registered variant is used, Table II is brought up to date too (see
    :func:`ensure_alignment_table`), so ``analyze`` and ``report`` find it.
    """
    check_variant(variant)
    if variant == UNREGISTERED:
        return open_variant(cohort_root, variant)
    if not (variant_dir(cohort_root, variant) / MANIFEST).exists():
        from registration import register_variant

        log.info("registering %s (%s)", cohort_root, variant)
        remote = executor if getattr(executor, "remote", False) else None
        register_variant(cohort_root, variant, workers=workers, executor=remote)
    ensure_alignment_table(cohort_root)
    return open_variant(cohort_root, variant)


def ensure_alignment_table(cohort_root: Path) -> Path:
    """``<cohort>/variants/table2.csv`` (Table II) over the unregistered cohort and every variant
    registered so far; rewritten when it is missing, unreadable, lacks a variant or is older
    than one (a variant registered again). Returns its path.
    """
    from registration.alignment import TABLE_CSV, alignment_table

    made = [v for v in RUN_VARIANTS[1:] if (variant_dir(cohort_root, v) / MANIFEST).exists()]
    path = Path(cohort_root) / "variants" / TABLE_CSV
    if path.is_file():
        try:
            present = set(pd.read_csv(path)["variant"])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, KeyError):
            present = set()
        newest = (
            max((variant_dir(cohort_root, v) / MANIFEST).stat().st_mtime for v in made)
            if made
            else 0.0
        )
        if present == {UNREGISTERED, *made} and path.stat().st_mtime >= newest:
            return path
    log.info("writing Table II (%s)", path)
    alignment_table(cohort_root, (UNREGISTERED, *made), published=published_liver_dice())
    return path


# ----------------------------------------------------------------------------- units


def unit_config(
    base: dict[str, Any], cohort_root: Path, variant: str, model: str, seed: int, runs: Path
) -> dict[str, Any]:
    """The resolved config of one unit (what ``config.json`` of its run folder holds)."""
    cohort = open_variant(cohort_root, check_variant(variant))
    models.info(model)  # unknown names fail here, listing the valid ones
    return {
        **base,
        "cohort": str(Path(cohort_root).resolve()),
        "cohort_name": cohort.name,
        "variant": variant,
        "model": model,
        "seed": int(seed),
        "runs": str(Path(runs).resolve()),
    }


def run_unit(config: dict[str, Any], progress: ProgressDisplay | None = None) -> Path:
    """Train and evaluate one unit; a finished unit is skipped, a killed one resumes.

    Writes ``config.json`` first, ``metrics.json`` last (its presence means finished).
    ``progress``: where training shows its progress (default: nowhere).
    """
    run_dir = unit_dir(config)
    if (run_dir / CONFIG).exists():
        check_same(run_dir, config)
        if (run_dir / METRICS).exists():
            return run_dir
    else:
        save_json(run_dir / CONFIG, config, "run's settings")
    result = train(config, run_dir, progress=progress)
    device = pick_device(config["train"]["device"])
    best = load_checkpoint(run_dir / CHECKPOINTS / BEST)
    size = config["detector"]["input_size"]
    cohort = open_variant(config["cohort"], config["variant"])
    train_set = LesionSliceDataset(cohort, "train", size)
    model = build_model(config, model_overrides(config, run_dir, train_set)).to(device)
    model.load_state_dict(best["model"])
    amp = config["train"]["amp"] == "bf16"
    ev = config["eval"]
    metrics: dict[str, Any] = {}
    for split in SPLITS:
        frame = predict(
            model, LesionSliceDataset(cohort, split, size), device, ev["batch_size"], amp
        )
        save_csv(run_dir / f"predictions_{split}.csv", frame, f"{split} predictions")
        metrics[split] = evaluate_frame(
            frame,
            bootstrap=ev["bootstrap"],
            seed=config["seed"],
            score_threshold=ev["score_threshold"],
        )
    metrics.update(
        best_iteration=result["best_iteration"],
        best_val_score=result["best_score"],
        iterations=result["iteration"],
        images_per_second=result["images_per_second"],
        seconds=result["seconds"],
        device=str(device),
    )
    save_json(run_dir / METRICS, metrics, "metrics")
    return run_dir


# ----------------------------------------------------------------------------- matrix


def run_matrix(
    base: dict[str, Any],
    variant: str,
    model_names: Sequence[str],
    seeds: Sequence[int],
    cohort: str | Path | None = None,
    runs: str | Path = DEFAULT_RUNS,
    work: str | Path = DEFAULT_WORK,
    report: Callable[[str], None] = print,
    executor: Any = None,
) -> tuple[pd.DataFrame, list[Path]]:
    """Run every (model, variant, seed) unit plus its unregistered twin; returns AP rows.

    ``executor`` (``benchmark.executors``: local processes per GPU, or Ray) runs the units
    instead of this loop; a unit that fails there does not stop the others, and a RuntimeError
    naming the failed units and their logs is raised once every other unit has finished.
    """
    check_variant(variant)
    start = time.perf_counter()
    cohort_root = ensure_cohort(base, cohort, Path(work))
    ensure_variant(cohort_root, variant, base["registration"]["workers"], executor)
    variants = list(dict.fromkeys([UNREGISTERED, variant]))
    units = [
        unit_config(base, cohort_root, v, m, s, Path(runs))
        for m in model_names
        for v in variants
        for s in seeds
    ]
    failed = executor.run_units(units, report) if executor is not None else []
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(units)} units failed (the others finished; rerun the same "
            "command to retry, finished units are skipped): "
            + "; ".join(f"{label(c)}, log {log_path(c)}" for c in failed)
        )
    rows, dirs = [], []
    for k, config in enumerate(units, 1):
        head = (
            f"[{k}/{len(units)}] {config['model']} / {config['variant']} / seed {config['seed']}"
        )
        if executor is None and is_finished(config):
            report(f"{head}: finished before, skipped")
        elif executor is None:  # (an executor has run every unit and reported its progress)
            tick = time.perf_counter()
            report(f"{head}: training ...")
            run_unit(config)
            report(f"{head}: done in {time.perf_counter() - tick:.0f} s")
        run_dir = unit_dir(config)
        dirs.append(run_dir)
        metrics = read_json(run_dir / METRICS)
        for split in SPLITS:
            for key in METRIC_KEYS:
                rows.append(
                    (
                        config["model"],
                        config["variant"],
                        config["seed"],
                        split,
                        key,
                        float(metrics[split][key]),
                    )
                )
    report(f"matrix finished in {time.perf_counter() - start:.0f} s")
    frame = pd.DataFrame(rows, columns=["model", "variant", "seed", "split", "metric", "ap"])
    return frame, dirs


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


def set_threads(config: dict[str, Any]) -> None:
    """Apply ``train.threads`` (None keeps torch's default)."""
    threads = config["train"].get("threads")
    if threads:
        torch.set_num_threads(int(threads))
