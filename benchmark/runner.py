"""The benchmark matrix: (model, variant, seed) units, each an idempotent, resumable run folder.

A unit is described completely by its resolved config (see :func:`unit_config`), so
:func:`run_unit` can run anywhere that sees the cohort and the runs folder; an executor
(:mod:`benchmark.executors`) runs the units of a matrix. Layout of a run folder:
``docs/run-folder.md``; the summary of a matrix: :mod:`benchmark.analysis.summary`.
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
from benchmark.analysis.published import published_liver_dice
from benchmark.atomic import read_json
from benchmark.cohort import MANIFEST, UNREGISTERED, Cohort, open_variant, variant_dir
from benchmark.evaluation import METRIC_KEYS, evaluate_frame
from benchmark.outputs import save_csv, save_json
from benchmark.phantom.config import PAPER_SPLITS, cohort_name
from benchmark.prediction import predict
from benchmark.run_folder import CONFIG, METRICS, check_same, label, log_path, unit_dir
from benchmark.training import train
from benchmark.training_progress import ProgressDisplay
from benchmark.vocabulary import RUN_VARIANTS

log = logging.getLogger(__name__)

DEFAULT_WORK = Path("work")
DEFAULT_RUNS = Path("runs")
SPLITS = ("val", "test")


# ----------------------------------------------------------------------------- names


def check_variant(variant: str) -> str:
    """``variant`` when it names a variant (:data:`benchmark.vocabulary.RUN_VARIANTS`), else a
    ValueError listing them."""
    if variant not in RUN_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(RUN_VARIANTS)}")
    return variant


MODEL_SETS = {"all": "I", "ablations": "III"}
"""``--models`` shorthands: the paper table whose models they name."""


def parse_models(spec: str) -> list[str]:
    """``all`` (Table I models), ``ablations`` (Table III), a comma list of model names or of
    shell-style patterns (``gssd*``)."""
    if spec in MODEL_SETS:
        return models.list_models(table=MODEL_SETS[spec])
    names: list[str] = []
    unknown = []
    for part in (s.strip() for s in spec.split(",")):
        if part:
            found = models.list_models(pattern=part)
            names.extend(found)
            if not found:
                unknown.append(part)
    if unknown or not names:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown) or repr(spec)}; use all, ablations or a comma "
            f"list of: {', '.join(models.list_models())}"
        )
    return list(dict.fromkeys(names))


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
    :func:`ensure_alignment_table`), so ``analyze`` and ``report`` find it. ``variant`` is a
    name :func:`check_variant` accepted.
    """
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
    """The resolved config of one unit (what ``config.json`` of its run folder holds); an
    unknown variant or model fails here, naming the valid ones."""
    return _unit_config(base, cohort_root, check_variant(variant), model, seed, runs)


def check_model(base: dict[str, Any], model: str) -> None:
    """An unknown model, or an override it does not take, fails here naming the valid ones."""
    models.check_overrides(model, ["input_size", "width", *base["detector"].get("overrides", {})])


def _unit_config(
    base: dict[str, Any], cohort_root: Path, variant: str, model: str, seed: int, runs: Path
) -> dict[str, Any]:
    check_model(base, model)
    return {
        **base,
        "cohort": str(Path(cohort_root).resolve()),
        "cohort_name": open_variant(cohort_root, variant).name,
        "variant": variant,
        "model": model,
        "seed": int(seed),
        "runs": str(Path(runs).resolve()),
    }


def run_unit(config: dict[str, Any], progress: ProgressDisplay | None = None) -> Path:
    """Train and evaluate one unit; a finished unit is skipped, a killed one resumes.

    The cohort is opened and the model built once: training hands evaluation its datasets and
    model (:class:`benchmark.training.Trained`).

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
    trained = train(config, run_dir, progress=progress)
    model = trained.best_model()
    ev = config["eval"]
    metrics: dict[str, Any] = {}
    for split in SPLITS:
        frame = predict(model, trained.data[split], trained.device, ev["batch_size"], trained.amp)
        save_csv(run_dir / f"predictions_{split}.csv", frame, f"{split} predictions")
        metrics[split] = evaluate_frame(
            frame,
            bootstrap=ev["bootstrap"],
            seed=config["seed"],
            score_threshold=ev["score_threshold"],
        )
    metrics.update(
        best_iteration=trained.best_iteration,
        best_val_score=trained.best_score,
        iterations=trained.iteration,
        images_per_second=trained.images_per_second,
        seconds=trained.seconds,
        device=str(trained.device),
    )
    save_json(run_dir / METRICS, metrics, "metrics")
    return run_dir


# ----------------------------------------------------------------------------- matrix


def train_units(
    units: list[dict[str, Any]], executor: Any, report: Callable[[str], None] = print
) -> None:
    """Run every unit config with ``executor``; a unit that fails does not stop the others, and
    a RuntimeError naming the failed units and their logs is raised once the rest finished."""
    failed = executor.run_units(units, report)
    if failed:
        raise RuntimeError(
            f"{len(failed)} of {len(units)} units failed (the others finished; rerun the same "
            "command to retry, finished units are skipped): "
            + "; ".join(f"{label(c)}, log {log_path(c)}" for c in failed)
        )


def run_matrix(
    base: dict[str, Any],
    variant: str,
    model_names: Sequence[str],
    seeds: Sequence[int],
    *,
    executor: Any,
    cohort: str | Path | None = None,
    runs: str | Path = DEFAULT_RUNS,
    work: str | Path = DEFAULT_WORK,
    report: Callable[[str], None] = print,
) -> tuple[pd.DataFrame, list[Path]]:
    """Run every (model, variant, seed) unit plus its unregistered twin; returns AP rows.

    ``executor`` (:mod:`benchmark.executors`: local processes per GPU, or Ray) runs the units;
    a unit that fails there does not stop the others, and a RuntimeError naming the failed
    units and their logs is raised once every other unit has finished.
    """
    check_variant(variant)
    for model in model_names:  # before a cohort is made or registered
        check_model(base, model)
    start = time.perf_counter()
    cohort_root = ensure_cohort(base, cohort, Path(work))
    ensure_variant(cohort_root, variant, base["registration"]["workers"], executor)
    variants = list(dict.fromkeys([UNREGISTERED, variant]))
    units = [
        _unit_config(base, cohort_root, v, m, s, Path(runs))
        for m in model_names
        for v in variants
        for s in seeds
    ]
    train_units(units, executor, report)
    rows, dirs = [], []
    for config in units:
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


def set_threads(config: dict[str, Any]) -> None:
    """Apply ``train.threads`` (None keeps torch's default)."""
    threads = config["train"].get("threads")
    if threads:
        torch.set_num_threads(int(threads))
