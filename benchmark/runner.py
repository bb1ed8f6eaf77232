"""The benchmark matrix: (model, variant, seed) units, each an idempotent, resumable run folder.

A unit is described completely by its resolved config (see :func:`unit_config`), so
:func:`run_unit` can run anywhere that sees the cohort and the runs folder (a local loop here,
a cluster dispatcher later). Layout of a run folder: ``docs/run-folder.md``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

import models
from benchmark.atomic import atomic_path, read_json, write_json
from benchmark.cohort import MANIFEST, UNREGISTERED, Cohort, open_variant, variant_dir
from benchmark.dataset import LesionSliceDataset
from benchmark.evaluation import METRIC_KEYS, evaluate_frame
from benchmark.phantom.config import PAPER_SPLITS, cohort_name
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

log = logging.getLogger(__name__)

VARIANTS = (UNREGISTERED, "rigid", "affine", "nonrigid")
DEFAULT_WORK = Path("work")
DEFAULT_RUNS = Path("runs")
CONFIG, METRICS = "config.json", "metrics.json"
SPLITS = ("val", "test")
# settings that change how fast, not what, a unit computes: they may differ on a rerun
NON_IDENTITY = {
    ("train", "workers"),
    ("train", "device"),
    ("train", "threads"),
    ("eval", "batch_size"),
    ("phantom", "workers"),
    ("registration", "workers"),
    ("runs",),
    ("description",),
    ("profile",),
}


# ----------------------------------------------------------------------------- names


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {', '.join(VARIANTS)}")
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
    """
    check_variant(variant)
    if variant == UNREGISTERED or (variant_dir(cohort_root, variant) / MANIFEST).exists():
        return open_variant(cohort_root, variant)
    from registration import register_variant

    log.info("registering %s (%s)", cohort_root, variant)
    remote = executor if getattr(executor, "remote", False) else None
    return register_variant(cohort_root, variant, workers=workers, executor=remote)


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


def unit_dir(config: dict[str, Any]) -> Path:
    """``RUNS/<cohort>/<variant>/<model>/seed<k>/``."""
    return (
        Path(config["runs"])
        / config["cohort_name"]
        / config["variant"]
        / config["model"]
        / f"seed{config['seed']}"
    )


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in config.items():
        if (key,) in NON_IDENTITY:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if (key, k) not in NON_IDENTITY}
        out[key] = value
    return out


def _check_same(run_dir: Path, config: dict[str, Any]) -> None:
    old = read_json(run_dir / CONFIG)
    a, b = _identity(old), _identity(config)
    if a != b:
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ValueError(
            f"{run_dir / CONFIG}: this run folder holds a run with other settings (differs in "
            f"{', '.join(keys)}); use another --runs folder or delete {run_dir}"
        )


def is_finished(config: dict[str, Any]) -> bool:
    return (unit_dir(config) / METRICS).exists()


def run_unit(config: dict[str, Any]) -> Path:
    """Train and evaluate one unit; a finished unit is skipped, a killed one resumes.

    Writes ``config.json`` first, ``metrics.json`` last (its presence means finished).
    """
    run_dir = unit_dir(config)
    if (run_dir / CONFIG).exists():
        _check_same(run_dir, config)
        if (run_dir / METRICS).exists():
            return run_dir
    else:
        write_json(run_dir / CONFIG, config)
    result = train(config, run_dir)
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
        with atomic_path(run_dir / f"predictions_{split}.csv") as tmp:
            frame.to_csv(tmp, index=False)
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
    write_json(run_dir / METRICS, metrics)
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
        from benchmark.executors import units as ex

        raise RuntimeError(
            f"{len(failed)} of {len(units)} units failed (the others finished; rerun the same "
            "command to retry, finished units are skipped): "
            + "; ".join(f"{ex.label(c)}, log {ex.log_path(c)}" for c in failed)
        )
    rows, dirs = [], []
    for k, config in enumerate(units, 1):
        label = (
            f"[{k}/{len(units)}] {config['model']} / {config['variant']} / seed {config['seed']}"
        )
        if executor is None and is_finished(config):
            report(f"{label}: finished before, skipped")
        elif executor is None:  # (an executor has run every unit and reported its progress)
            tick = time.perf_counter()
            report(f"{label}: training ...")
            run_unit(config)
            report(f"{label}: done in {time.perf_counter() - tick:.0f} s")
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


def summary_tables(ap: pd.DataFrame, variant: str, split: str = "test") -> dict[str, pd.DataFrame]:
    """Per model and metric: AP (%) on ``variant`` and unregistered, eq. 6 sensitivity (%).

    AP is averaged over seeds first; sensitivity = 1 - AP_unregistered / AP_variant (NaN when
    the registered AP is 0, where eq. 6 is undefined).
    """
    from benchmark.analysis.sensitivity import sensitivity

    rows = ap[ap["split"] == split]
    mean = rows.groupby(["model", "variant", "metric"], sort=False)["ap"].mean()
    order = list(dict.fromkeys(rows["model"]))

    def table(v: str) -> pd.DataFrame:
        data = {k: [100 * mean.get((m, v, k), math.nan) for m in order] for k in METRIC_KEYS}
        return pd.DataFrame(data, index=pd.Index(order, name="model"))

    def sens(u: float, r: float) -> float:
        try:
            return 100 * sensitivity(u / 100, r / 100)
        except ValueError:
            return math.nan

    out = {variant: table(variant)}
    if variant != UNREGISTERED:
        out[UNREGISTERED] = table(UNREGISTERED)
        reg, unreg = out[variant], out[UNREGISTERED]
        out["sensitivity"] = pd.DataFrame(
            {k: [sens(u, r) for u, r in zip(unreg[k], reg[k], strict=True)] for k in METRIC_KEYS},
            index=reg.index,
        )
    return out


def set_threads(config: dict[str, Any]) -> None:
    """Apply ``train.threads`` (None keeps torch's default)."""
    threads = config["train"].get("threads")
    if threads:
        torch.set_num_threads(int(threads))
