"""One unit's run folder: where it lives, what marks it finished, how a rerun is checked.

A unit is one (model, variant, seed) of a matrix, described completely by its resolved config
(:func:`benchmark.runner.unit_config`). Its folder is ``RUNS/<cohort>/<variant>/<model>/seed<k>/``
(layout: ``docs/run-folder.md``): ``config.json`` is written first, ``metrics.json`` last (its
presence means finished) and ``unit.log`` collects what an executor's worker printed. The
runner, the executors and the commands all find a unit's files through this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.atomic import read_json
from benchmark.names import check_name

CONFIG, METRICS = "config.json", "metrics.json"
UNIT_LOG = "unit.log"
# settings that change how fast, not what, a unit computes: they may differ on a rerun
NON_IDENTITY = {
    ("train", "workers"),
    ("train", "device"),
    ("train", "threads"),
    ("train", "cpu_units"),
    ("eval", "batch_size"),
    ("phantom", "workers"),
    ("registration", "workers"),
    ("runs",),
    ("description",),
    ("profile",),
}


def unit_dir(config: dict[str, Any]) -> Path:
    """``RUNS/<cohort>/<variant>/<model>/seed<k>/``; every part must be a plain folder name."""
    parts = [check_name(str(config[key]), key) for key in ("cohort_name", "variant", "model")]
    return Path(config["runs"]).joinpath(*parts, f"seed{config['seed']}")


def label(config: dict[str, Any]) -> str:
    """``model / variant / seed k`` of a unit config."""
    return f"{config['model']} / {config['variant']} / seed {config['seed']}"


def log_path(config: dict[str, Any]) -> Path:
    """The unit's ``unit.log``."""
    return unit_dir(config) / UNIT_LOG


def is_finished(config: dict[str, Any]) -> bool:
    """True when the unit's ``metrics.json`` exists."""
    return (unit_dir(config) / METRICS).exists()


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` without the settings in :data:`NON_IDENTITY` (speed, not results)."""
    out = {}
    for key, value in config.items():
        if (key,) in NON_IDENTITY:
            continue
        if isinstance(value, dict):
            value = {k: v for k, v in value.items() if (key, k) not in NON_IDENTITY}
        out[key] = value
    return out


def check_same(run_dir: Path, config: dict[str, Any]) -> None:
    """Raise ``ValueError`` when ``run_dir/config.json`` holds a run with other settings."""
    old = read_json(run_dir / CONFIG)
    a, b = identity(old), identity(config)
    if a != b:
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        raise ValueError(
            f"{run_dir / CONFIG}: this run folder holds a run with other settings (differs in "
            f"{', '.join(keys)}); use another --runs folder or delete {run_dir}"
        )
