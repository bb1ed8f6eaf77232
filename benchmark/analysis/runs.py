"""Collect run folders ``RUNS/<cohort>/<variant>/<model>/seed<k>/`` (layout: docs/run-folder.md).

A run is finished when its ``metrics.json`` exists (it is written last). Unfinished, malformed
or unexpected folders never stop the analysis: they are listed in :attr:`RunSet.problems`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.analysis.published import VARIANTS
from benchmark.vocabulary import REGISTERED_VARIANTS, REGISTRATIONS

OTHER_EXPERIMENTS = tuple(v for v in REGISTERED_VARIANTS if v not in REGISTRATIONS)
"""Registered variants the paper's tables never mix in: ``*-3d`` and ``*-fast``."""

SEED_DIR = re.compile(r"^seed(\d+)$")
AP_KEYS = ("IoU30", "IoU50", "IoU70", "IoBB30", "IoBB50", "IoBB70")


@dataclass
class Run:
    """One finished run folder."""

    cohort: str
    variant: str
    model: str
    seed: int
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]

    def predictions(self, split: str) -> Path | None:
        """``predictions_<split>.csv`` when the run wrote it."""
        path = self.path / f"predictions_{split}.csv"
        return path if path.is_file() else None


@dataclass
class RunSet:
    """All finished runs under a folder, plus what could not be used and why."""

    root: Path
    runs: list[Run] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def cohorts(self) -> list[str]:
        return sorted({r.cohort for r in self.runs})

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(r.model for r in self.runs))

    def select(self, cohort: str | None) -> RunSet:
        """Runs of one cohort; ``None`` needs exactly one cohort among the runs."""
        if cohort is None:
            if len(self.cohorts) > 1:
                raise ValueError(
                    f"{self.root}: runs of several cohorts ({', '.join(self.cohorts)}); "
                    "choose one with --cohort"
                )
            return self
        if cohort not in self.cohorts:
            raise ValueError(
                f"{self.root}: no finished runs of cohort {cohort!r}; "
                f"found {', '.join(self.cohorts) or 'none'}"
            )
        runs = [r for r in self.runs if r.cohort == cohort]
        return RunSet(self.root, runs, list(self.problems))

    def of_models(self, models: list[str]) -> RunSet:
        """The runs of ``models`` alone."""
        return RunSet(self.root, [r for r in self.runs if r.model in models], list(self.problems))

    def missing(self, models: list[str]) -> list[str]:
        """For each model, the variants without a finished run (sensitivity needs both ends)."""
        have = {(r.model, r.variant) for r in self.runs}
        out = []
        for model in models:
            absent = [v for v in VARIANTS if (model, v) not in have]
            if absent and len(absent) < len(VARIANTS):
                out.append(f"{model}: no finished run for {', '.join(absent)}")
        return out

    def cohort_paths(self) -> list[Path]:
        """Cohort folders named in the runs' configs (for Table II)."""
        found = []
        for run in self.runs:
            value = run.config.get("cohort")
            if isinstance(value, dict):
                value = value.get("path") or value.get("root")
            if isinstance(value, str) and value:
                found.append(Path(value))
        return list(dict.fromkeys(found))


def collect_runs(root: str | os.PathLike[str]) -> RunSet:
    """Every ``<cohort>/<variant>/<model>/seed<k>`` folder under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: run folder not found")
    found = RunSet(root)
    for path in sorted(root.glob("*/*/*/seed*")):
        if path.is_dir() and SEED_DIR.match(path.name):
            _add(found, path)
    return found


def load_runs(paths: list[Path], root: str | os.PathLike[str]) -> RunSet:
    """The run folders ``paths`` (``<root>/<cohort>/<variant>/<model>/seed<k>``) alone."""
    found = RunSet(Path(root))
    for path in paths:
        if not SEED_DIR.match(Path(path).name):
            raise ValueError(f"{path}: not a run folder (<cohort>/<variant>/<model>/seed<k>)")
        _add(found, Path(path))
    return found


def _add(found: RunSet, path: Path) -> None:
    """Read the run folder ``path`` into ``found``, or record why it cannot be used."""
    match = SEED_DIR.match(path.name)
    model, variant, cohort = path.parent.name, path.parent.parent.name, path.parents[2].name
    if variant in OTHER_EXPERIMENTS:
        found.problems.append(
            f"{path}: variant {variant!r} is registered outside the paper's protocol (3D or "
            "another elastix preset): a different experiment, left out of the paper's tables "
            "(`run --variant` prints its own)"
        )
        return
    if variant not in VARIANTS:
        found.problems.append(f"{path}: unknown variant {variant!r} (use {', '.join(VARIANTS)})")
        return
    if not (path / "metrics.json").is_file():
        found.problems.append(f"{path}: unfinished (no metrics.json)")
        return
    try:
        metrics = _read(path / "metrics.json")
        config = _read(path / "config.json") if (path / "config.json").is_file() else {}
        _check(path / "metrics.json", metrics)
    except ValueError as err:
        found.problems.append(str(err))
        return
    found.runs.append(Run(cohort, variant, model, int(match.group(1)), path, config, metrics))


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _check(path: Path, metrics: dict[str, Any]) -> None:
    for split in ("val", "test"):
        values = metrics.get(split, {})
        if not isinstance(values, dict):
            raise ValueError(f"{path}: '{split}' is not an object")
        for key in AP_KEYS:
            value = values.get(key)
            if value is not None and not (_is_number(value) and 0.0 <= float(value) <= 1.0):
                raise ValueError(
                    f"{path}: {split} {key} = {value!r} is not an AP fraction in [0, 1]"
                )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
