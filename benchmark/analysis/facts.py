"""What produced a set of runs: profile, cohort, patients and lesion boxes per split, seeds.

Figures and the report print these beside the numbers so that a reader can judge them (one
test patient with four lesion boxes is not 10 patients of the paper's test split).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.analysis.runs import RunSet

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class RunFacts:
    """Settings and data behind a :class:`RunSet`; empty fields were not recorded."""

    profiles: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()
    cohort_kinds: tuple[str, ...] = ()
    patients: dict[str, int] = field(default_factory=dict)  # split -> patients
    lesion_boxes: dict[str, int] = field(default_factory=dict)  # split -> ground-truth boxes
    seeds: tuple[int, ...] = ()
    iterations: tuple[int, ...] = ()
    devices: tuple[str, ...] = ()

    def line(self) -> str:
        """One line for a caption or a page header."""
        parts = [f"profile {_join(self.profiles)}"]
        if self.iterations:
            parts[0] += f" ({_join(self.iterations)} iterations)"
        cohort = f"cohort {_join(self.cohorts)}"
        if self.cohort_kinds:
            cohort += f" ({_join(self.cohort_kinds)})"
        parts.append(cohort)
        for split in ("val", "test"):
            if split in self.patients or split in self.lesion_boxes:
                text = f"{split}: {_count(self.patients.get(split), 'patient')}"
                if split in self.lesion_boxes:
                    text += f", {_count(self.lesion_boxes[split], 'lesion box', 'es')}"
                parts.append(text)
        parts.append(f"seed{'s' if len(self.seeds) != 1 else ''} {_join(self.seeds)}")
        if self.devices:
            parts.append(f"device {_join(self.devices)}")
        return "; ".join(parts)


def run_facts(runs: RunSet) -> RunFacts:
    """Facts of ``runs`` from their ``config.json``, the cohort manifest and the predictions."""
    configs = [r.config for r in runs.runs]
    manifests = [m for m in (_manifest(p) for p in runs.cohort_paths()) if m]
    patients: dict[str, int] = {}
    if manifests:
        splits = [p.get("split") for p in manifests[0].get("patients", [])]
        patients = {s: splits.count(s) for s in SPLITS if s in splits}
    return RunFacts(
        profiles=_distinct(c.get("profile") for c in configs),
        cohorts=tuple(runs.cohorts),
        cohort_kinds=_distinct(m.get("kind") for m in manifests),
        patients=patients,
        lesion_boxes=_lesion_boxes(runs),
        seeds=tuple(sorted({r.seed for r in runs.runs})),
        iterations=_distinct(c.get("train", {}).get("iterations") for c in configs),
        devices=_distinct(r.metrics.get("device") for r in runs.runs),
    )


def _lesion_boxes(runs: RunSet) -> dict[str, int]:
    """Ground-truth boxes per split in the predictions of one run (unregistered first)."""
    order = sorted(runs.runs, key=lambda r: (r.variant != "unregistered", r.seed, r.model))
    out: dict[str, int] = {}
    for split in ("val", "test"):
        for run in order:
            path = run.predictions(split)
            if path is None:
                continue
            try:
                kinds = pd.read_csv(path, usecols=["kind"])["kind"]
            except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
                continue  # unreadable predictions are reported by the analysis itself
            out[split] = int((kinds == "gt").sum())
            break
    return out


def _manifest(cohort: Path) -> dict | None:
    try:
        data = json.loads((cohort / "cohort.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a moved or deleted cohort: the facts say less, the analysis goes on
    return data if isinstance(data, dict) else None


def _distinct(values) -> tuple:
    return tuple(dict.fromkeys(v for v in values if v is not None and v != ""))


def _join(values: tuple) -> str:
    return ", ".join(str(v) for v in values) if values else "not recorded"


def _count(n: int | None, noun: str, plural: str = "s") -> str:
    if n is None:
        return f"? {noun}{plural}"
    return f"{n} {noun}{'' if n == 1 else plural}"
