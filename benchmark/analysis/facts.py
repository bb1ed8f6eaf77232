"""What a set of runs' numbers rest on, and how numbers with their intervals print.

Profile, cohort (name, synthetic or imported, size, patients per split), the patients and
lesion boxes evaluated per split, seeds, the bootstrap behind the intervals, and every way the
protocol differs from the one behind the published numbers. ``run``, ``analyze``, ``compare``
and ``report`` state them, Fig. 5's caption carries :meth:`RunFacts.line`, ``summary.json``
holds :meth:`RunFacts.to_dict` (one test patient with four lesion boxes is not the paper's ten).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmark.analysis.estimates import Estimates
from benchmark.analysis.published import PAPER_PROTOCOL, VARIANTS
from benchmark.analysis.runs import RunSet
from benchmark.config import profile_label

SPLITS = ("train", "val", "test")
EVALUATED = ("val", "test")
KIND_LABELS = {"synthetic": "synthetic phantom", "imported": "imported"}
NOT_AVAILABLE = "n/a"
PAPER_CAPTION = (
    f"Published numbers: {PAPER_PROTOCOL['patients']} real patients "
    f"({PAPER_PROTOCOL['test_patients']} in the test split), {PAPER_PROTOCOL['input_size']} px "
    "input, 60k iterations; the paper gives no confidence intervals."
)


def format_estimate(
    value: float, low: float = math.nan, high: float = math.nan, reason: str = "", digits: int = 1
) -> str:
    """``"60.8 [41.2, 80.1]"``; ``"n/a"`` when undefined; ``"60.8 [no CI]"`` without interval."""
    if reason or not math.isfinite(value):
        return NOT_AVAILABLE
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.{digits}f} [no CI]"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def undefined_notes(rows: list[tuple[str, str]]) -> list[str]:
    """``(cell, reason)`` pairs -> one ``"n/a cells: reason"`` line per reason."""
    by_reason: dict[str, list[str]] = {}
    for cell, reason in rows:
        by_reason.setdefault(reason, []).append(cell)
    return [f"n/a {', '.join(cells)}: {reason}" for reason, cells in by_reason.items()]


@dataclass(frozen=True)
class RunFacts:
    """Settings and data behind a :class:`RunSet`; empty fields were not recorded."""

    profiles: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()
    cohort_kinds: tuple[str, ...] = ()
    cohort_size: int | None = None  # patients in the cohort
    patients: dict[str, int] = field(default_factory=dict)  # split -> patients assigned
    lesion_boxes: dict[str, int] = field(default_factory=dict)  # split -> evaluated boxes
    # variant -> split -> {"patients", "lesion_boxes"} evaluated (patients with lesion boxes)
    evaluated: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    seeds: tuple[int, ...] = ()
    input_sizes: tuple[int, ...] = ()
    iterations: tuple[int, ...] = ()
    devices: tuple[str, ...] = ()
    bootstrap: int = 0  # patient resamples behind the 95 % intervals (0: none)
    bootstrap_seed: int = 0
    min_lesion_boxes: int = 0

    def line(self) -> str:
        """One line for a caption or a page header (profile files by their file names)."""
        parts = [f"profile {_join(tuple(profile_label(p) for p in self.profiles))}"]
        if self.iterations:
            parts[0] += f" ({_join(self.iterations)} iterations)"
        cohort = f"cohort {_join(self.cohorts)}"
        if self.cohort_kinds:
            cohort += f" ({_join(self.cohort_kinds)})"
        parts.append(cohort)
        evaluated = next(iter(self.evaluated.values()), {})  # the unregistered variant first
        for split in EVALUATED:
            if split in self.patients or split in self.lesion_boxes:
                n = self.patients.get(split, evaluated.get(split, {}).get("patients"))
                text = f"{split}: {_count(n, 'patient')}"
                if split in self.lesion_boxes:
                    text += f", {_count(self.lesion_boxes[split], 'lesion box', 'es')}"
                parts.append(text)
        parts.append(f"seed{'s' if len(self.seeds) != 1 else ''} {_join(self.seeds)}")
        if self.devices:
            parts.append(f"device {_join(self.devices)}")
        return "; ".join(parts)

    def differences(self) -> list[str]:
        """How the protocol differs from the one behind the published numbers (empty: same)."""
        paper = PAPER_PROTOCOL
        out = []
        if self.cohort_kinds != ("imported",):
            kinds = [KIND_LABELS.get(k, k) for k in self.cohort_kinds] or ["kind unknown"]
            out.append(f"{' / '.join(kinds)} cohort, not {paper['patients']} real patients")
        elif self.cohort_size != paper["patients"]:
            out.append(f"{_count(self.cohort_size, 'patient')}, not {paper['patients']}")
        tests = self.patients.get("test")
        if tests is None:  # no manifest: the patients evaluated
            found = {s["test"]["patients"] for s in self.evaluated.values() if "test" in s}
            tests = min(found) if found else None
        if tests != paper["test_patients"]:
            out.append(f"{_count(tests, 'test patient')}, not {paper['test_patients']}")
        if self.input_sizes != (paper["input_size"],):
            shown = f"input {_join(self.input_sizes, '/')} px" if self.input_sizes else "input size"
            out.append(f"{shown}, not {paper['input_size']} px")
        if self.iterations != (paper["iterations"],):
            shown = _join(self.iterations, "/") if self.iterations else "unknown"
            out.append(f"{shown} iterations, not 60k")
        return out

    def lines(self) -> list[str]:
        """The facts as short lines of plain text (printed by the commands)."""
        kinds = _join(tuple(KIND_LABELS.get(k, k) for k in self.cohort_kinds))
        size = f", {self.cohort_size} patients" if self.cohort_size is not None else ""
        split_sizes = ", ".join(f"{s} {n}" for s, n in self.patients.items())
        lines = [
            f"cohort {_join(self.cohorts)}: {kinds}{size}"
            + (f" ({split_sizes})" if split_sizes else ""),
            f"profile {_join(self.profiles)}; seeds {_join(self.seeds)}; input "
            f"{_join(self.input_sizes, '/')} px; {_join(self.iterations, '/')} iterations",
        ]
        for variant, splits in self.evaluated.items():
            parts = [
                f"{split} {_count(s['patients'], 'patient')}, "
                f"{_count(s['lesion_boxes'], 'lesion box', 'es')}"
                for split, s in splits.items()
            ]
            lines.append(f"evaluated ({variant}): {'; '.join(parts)}")
        single = [
            split
            for split in EVALUATED
            if any(s.get(split, {}).get("patients") == 1 for s in self.evaluated.values())
        ]
        if self.bootstrap and single:
            lines.append(
                f"one patient in {' and '.join(single)}: resampling patients cannot show how much "
                "the numbers there depend on the patients; those intervals show the seed spread only"
            )
        if self.bootstrap:
            lines.append(
                f"[95% CI]: {self.bootstrap} patient resamples (bootstrap seed "
                f"{self.bootstrap_seed}), paired between variants, seeds pooled; n/a: undefined "
                f"(registered AP 0, or fewer than {self.min_lesion_boxes} lesion boxes in a split)"
            )
        else:
            lines.append("no confidence intervals (bootstrap off)")
        diffs = self.differences()
        if diffs:
            lines.append(
                "NOT the paper's protocol: "
                + "; ".join(diffs)
                + ". The published numbers are a reference, not a like-for-like comparison."
            )
        else:
            lines.append("protocol: the paper's (cohort size, test patients, input, iterations)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the paper's protocol and the differences from it."""
        out = asdict(self)
        out |= {
            "paper_protocol": dict(PAPER_PROTOCOL),
            "differences_from_paper": self.differences(),
        }
        return out


def run_facts(runs: RunSet, est: Estimates) -> RunFacts:
    """Facts of ``runs`` from their ``config.json``, the cohort manifest and ``est``."""
    configs = [r.config for r in runs.runs]
    manifests = [m for m in (_manifest(p) for p in runs.cohort_paths()) if m]
    patients: dict[str, int] = {}
    size = None
    if manifests:
        records = manifests[0].get("patients", [])
        splits = [p.get("split") for p in records if isinstance(p, dict)]
        patients = {s: splits.count(s) for s in SPLITS if s in splits}
        size = len(records)
    evaluated = _evaluated(est)
    first = next(iter(evaluated.values()), {})  # the unregistered variant when there is one
    return RunFacts(
        profiles=_distinct(c.get("profile") for c in configs),
        cohorts=tuple(runs.cohorts),
        cohort_kinds=_distinct(m.get("kind") for m in manifests),
        cohort_size=size,
        patients=patients,
        lesion_boxes={
            s: v["lesion_boxes"] for s, v in first.items() if v["lesion_boxes"] is not None
        },
        evaluated=evaluated,
        seeds=tuple(sorted({r.seed for r in runs.runs})),
        input_sizes=_distinct(c.get("detector", {}).get("input_size") for c in configs),
        iterations=_distinct(c.get("train", {}).get("iterations") for c in configs),
        devices=_distinct(r.metrics.get("device") for r in runs.runs),
        bootstrap=est.n_boot,
        bootstrap_seed=est.seed,
        min_lesion_boxes=est.min_boxes,
    )


def _evaluated(est: Estimates) -> dict[str, dict[str, dict[str, int | None]]]:
    """Per variant and split: patients and lesion boxes evaluated (fewest over its runs)."""
    out: dict[str, dict[str, dict[str, int | None]]] = {}
    frame = est.splits
    for variant in VARIANTS:
        rows = frame[frame["registration"] == variant]
        for split in EVALUATED:
            part = rows[rows["split"] == split]
            if not part.empty:
                out.setdefault(variant, {})[split] = {
                    "patients": _fewest(part["patients"]),
                    "lesion_boxes": _fewest(part["lesion_boxes"]),
                }
    return out


def _manifest(cohort: Path) -> dict | None:
    try:
        data = json.loads((cohort / "cohort.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None  # a moved or deleted cohort: the facts say less, the analysis goes on
    return data if isinstance(data, dict) else None


def _fewest(values) -> int | None:
    known = [int(v) for v in values if v is not None and v == v]
    return min(known) if known else None


def _distinct(values) -> tuple:
    return tuple(sorted({v for v in values if v is not None and v != ""}, key=str))


def _join(values: tuple, sep: str = ", ") -> str:
    return sep.join(str(v) for v in values) if values else "not recorded"


def _count(n: int | None, noun: str, plural: str = "s") -> str:
    if n is None:
        return f"? {noun}{plural}"
    return f"{n} {noun}{'' if n == 1 else plural}"
