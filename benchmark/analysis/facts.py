"""What a run folder's numbers rest on (profile, cohort, patients, lesion boxes, seeds, bootstrap),
how its protocol differs from the one behind the published numbers, and how numbers print.

``run``, ``analyze``, ``compare`` and ``report`` all state these facts; ``summary.json`` holds
the dictionary of :func:`run_facts`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmark.analysis.estimates import SPLITS, Estimates
from benchmark.analysis.published import PAPER_PROTOCOL, VARIANTS
from benchmark.analysis.runs import RunSet
from benchmark.cohort import Cohort, CohortError

KIND_LABELS = {"synthetic": "synthetic phantom", "imported": "imported"}
NOT_AVAILABLE = "n/a"


def format_estimate(
    value: float, low: float = math.nan, high: float = math.nan, reason: str = "", digits: int = 1
) -> str:
    """``"60.8 [41.2, 80.1]"``; ``"n/a"`` when undefined; ``"60.8 [no CI]"`` without interval."""
    if reason or not math.isfinite(value):
        return NOT_AVAILABLE
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{value:.{digits}f} [no CI]"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def run_facts(runs: RunSet, est: Estimates) -> dict[str, Any]:
    """The facts of ``runs`` (one cohort) as a JSON-ready dictionary."""
    configs = [r.config for r in runs.runs]
    facts: dict[str, Any] = {
        "cohort": _cohort(runs),
        "profiles": _distinct(c.get("profile") for c in configs),
        "seeds": sorted({r.seed for r in runs.runs}),
        "models": runs.models,
        "variants": [v for v in VARIANTS if any(r.variant == v for r in runs.runs)],
        "input_size": _distinct(c.get("detector", {}).get("input_size") for c in configs),
        "iterations": _distinct(c.get("train", {}).get("iterations") for c in configs),
        "splits": _splits(est),
        "uncertainty": {
            "level": 0.95,
            "bootstrap_resamples": est.n_boot,
            "bootstrap_seed": est.seed,
            "resampled": "patients of each split; the same resamples for every run of a seed "
            "(paired between variants); the resamples of all seeds pooled",
            "min_lesion_boxes": est.min_boxes,
        },
        "paper_protocol": dict(PAPER_PROTOCOL),
    }
    facts["differences_from_paper"] = protocol_differences(facts)
    return facts


def protocol_differences(facts: dict[str, Any]) -> list[str]:
    """How the runs' protocol differs from the one behind the published numbers (empty: same)."""
    paper = PAPER_PROTOCOL
    out = []
    cohort = facts["cohort"]
    if cohort["kind"] != "imported":
        kind = KIND_LABELS.get(cohort["kind"], "a") + " cohort"
        if cohort["kind"] not in KIND_LABELS:
            kind = "a cohort of unknown kind"
        out.append(f"{kind}, not {paper['patients']} real patients")
    elif cohort["patients"] != paper["patients"]:
        out.append(f"{cohort['patients']} patients, not {paper['patients']}")
    tests = {s["test"]["patients"] for s in facts["splits"].values() if "test" in s} - {"?"}
    if tests and tests != {paper["test_patients"]}:
        shown = "/".join(str(t) for t in sorted(tests))
        plural = "s" * (max(tests) != 1)
        out.append(f"{shown} test patient{plural} with lesions, not {paper['test_patients']}")
    sizes = facts["input_size"]
    if sizes != [paper["input_size"]]:
        shown = f"input {'/'.join(map(str, sizes))} px" if sizes else "input size unknown"
        out.append(f"{shown}, not {paper['input_size']} px")
    its = facts["iterations"]
    if its != [paper["iterations"]]:
        shown = f"{'/'.join(map(str, its))} iterations" if its else "iterations unknown"
        out.append(f"{shown}, not 60k")
    return out


def facts_lines(facts: dict[str, Any]) -> list[str]:
    """The facts as short lines of plain text (printed by the commands, listed in reports)."""
    cohort = facts["cohort"]
    kind = KIND_LABELS.get(cohort["kind"], "kind unknown (cohort folder not found)")
    size = f", {cohort['patients']} patients" if cohort["patients"] is not None else ""
    seeds = ", ".join(map(str, facts["seeds"]))
    lines = [
        f"cohort {cohort['name']}: {kind}{size}",
        f"profile {', '.join(map(str, facts['profiles'])) or 'unknown'}; seeds {seeds}; "
        f"input {'/'.join(map(str, facts['input_size'])) or '?'} px; "
        f"{'/'.join(map(str, facts['iterations'])) or '?'} iterations",
    ]
    for variant, splits in facts["splits"].items():
        parts = [
            f"{split} {s['patients']} patient{'s' * (s['patients'] != 1)}, "
            f"{s['lesion_boxes']} lesion boxes"
            for split, s in splits.items()
        ]
        lines.append(f"evaluated ({variant}): {'; '.join(parts)}")
    unc = facts["uncertainty"]
    single = [
        split
        for split in SPLITS
        if any(s.get(split, {}).get("patients") == 1 for s in facts["splits"].values())
    ]
    if unc["bootstrap_resamples"] and single:
        lines.append(
            f"one patient in {' and '.join(single)}: resampling patients cannot show how much the "
            "numbers depend on the patients there; those intervals show the seed spread only"
        )
    if unc["bootstrap_resamples"]:
        lines.append(
            f"[95% CI]: {unc['bootstrap_resamples']} patient resamples (bootstrap seed "
            f"{unc['bootstrap_seed']}), paired between variants, seeds pooled; n/a: undefined "
            f"(registered AP 0, or fewer than {unc['min_lesion_boxes']} lesion boxes in a split)"
        )
    else:
        lines.append("no confidence intervals (bootstrap off)")
    diffs = facts["differences_from_paper"]
    if diffs:
        lines.append(
            "NOT the paper's protocol: "
            + "; ".join(diffs)
            + ". The published numbers are a reference, not a like-for-like comparison."
        )
    else:
        lines.append("protocol: the paper's (cohort size, test patients, input, iterations)")
    return lines


def undefined_notes(rows: list[tuple[str, str]]) -> list[str]:
    """``(cell, reason)`` pairs -> one ``"n/a cells: reason"`` line per reason."""
    by_reason: dict[str, list[str]] = {}
    for cell, reason in rows:
        by_reason.setdefault(reason, []).append(cell)
    return [f"n/a {', '.join(cells)}: {reason}" for reason, cells in by_reason.items()]


def _cohort(runs: RunSet) -> dict[str, Any]:
    name = runs.cohorts[0] if runs.cohorts else "none"
    info: dict[str, Any] = {"name": name, "kind": "unknown", "patients": None, "path": None}
    for run in runs.runs:
        path = run.config.get("cohort")
        if not isinstance(path, str):
            continue
        info["path"] = path
        try:
            cohort = Cohort(Path(path))
        except (CohortError, OSError, ValueError):
            continue  # moved or deleted since the run: the kind stays unknown
        info |= {"kind": cohort.kind, "patients": len(cohort)}
        break
    return info


def _splits(est: Estimates) -> dict[str, dict[str, dict[str, Any]]]:
    """Per variant and split: evaluated patients and lesion boxes (fewest over its runs)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    frame = est.splits
    for variant in VARIANTS:
        rows = frame[frame["registration"] == variant]
        for split in SPLITS:
            part = rows[rows["split"] == split]
            if part.empty:
                continue
            out.setdefault(variant, {})[split] = {
                "patients": _fewest(part["patients"]),
                "lesion_boxes": _fewest(part["lesion_boxes"]),
            }
    return out


def _fewest(values) -> int | str:
    known = [int(v) for v in values if v == v and v is not None]
    return min(known) if known else "?"


def _distinct(values) -> list:
    return sorted({v for v in values if v is not None}, key=str)
