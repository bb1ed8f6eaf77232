"""Alignment quality of the unregistered cohort and its variants: the paper's Table II.

Every figure is computed over the same slices for every variant: the slices the detector can
touch (:func:`registration.metrics.touched_slices` of the unregistered lesion mask), for each
moving phase against portal.

- ``liver_dice``: per-slice liver Dice, mean over non-zero values as the paper did (needs
  per-phase liver masks; NaN otherwise).
- ``ncc``: mask-free normalised cross-correlation inside the body (portal HU > -500), mean
  over slice x phase pairs; lower across phases than within one because contrast differs.
- ``residual_mm`` / ``residual_inplane_mm``: mean length of the true remaining displacement
  (3D, and its in-plane part) over the portal liver mask (body mask when there is none), for
  synthetic cohorts that carry displacement fields; NaN otherwise. Per-slice 2D registration
  cannot undo through-plane (cranio-caudal) motion, so ``residual_mm`` keeps that part; 3D
  registration (``*-3d`` variants) can.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.atomic import write_text
from benchmark.cohort import UNREGISTERED, Cohort, Patient, open_variant, variant_dir
from benchmark.vocabulary import FIXED_PHASE, REGISTERED_VARIANTS, REGISTRATIONS
from registration.metrics import (
    BODY_HU,
    MOVING_PHASES,
    body_ncc,
    liver_dice,
    mean_nonzero,
    touched_slices,
)

log = logging.getLogger(__name__)

COLUMNS = (
    "variant", "liver_dice", "liver_dice_published", "ncc", "residual_mm",
    "residual_inplane_mm", "slices", "patients",
)
TABLE_CSV = "table2.csv"
TABLE_MD = "table2.md"


class _Accumulator:
    """Collects per-slice figures of one variant over all its patients."""

    def __init__(self) -> None:
        self.dice: list[np.ndarray] = []
        self.ncc: list[float] = []
        self.residual = [0.0, 0.0, 0]  # sum 3D, sum in-plane, voxels
        self.slices = 0
        self.patients = 0

    def add(self, patient: Patient, slices: np.ndarray) -> None:
        self.patients += 1
        self.slices += len(slices)
        fixed = patient.phases[FIXED_PHASE][slices]
        if patient.liver and FIXED_PHASE in patient.liver:
            self.dice.extend(liver_dice(patient, slices).values())
            region = patient.liver[FIXED_PHASE][slices] > 0
        else:
            region = fixed > BODY_HU
        for phase in MOVING_PHASES:
            moving = patient.phases[phase][slices]
            self.ncc.extend(body_ncc(f, m) for f, m in zip(fixed, moving, strict=True))
            if patient.displacement and phase in patient.displacement:
                field = patient.displacement[phase][slices][region]
                self.residual[0] += float(np.linalg.norm(field, axis=-1).sum())
                self.residual[1] += float(np.linalg.norm(field[:, 1:], axis=-1).sum())
                self.residual[2] += int(region.sum())

    def row(self, variant: str, published: Mapping[str, float]) -> dict[str, object]:
        dice = np.concatenate(self.dice) if self.dice else np.zeros(0)
        voxels = self.residual[2]
        ncc = np.asarray(self.ncc, dtype=float)
        return {
            "variant": variant,
            "liver_dice": mean_nonzero(dice),
            "liver_dice_published": published.get(variant, float("nan")),
            "ncc": float(np.nanmean(ncc)) if np.isfinite(ncc).any() else float("nan"),
            "residual_mm": self.residual[0] / voxels if voxels else float("nan"),
            "residual_inplane_mm": self.residual[1] / voxels if voxels else float("nan"),
            "slices": self.slices,
            "patients": self.patients,
        }


def alignment_table(
    cohort_root: str | Path,
    variants: tuple[str, ...] | None = None,
    published: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """Table II: one row per variant (columns :data:`COLUMNS`), also written to
    ``cohort_root/variants/table2.csv`` and ``table2.md``.

    ``variants`` default: unregistered, the paper's three and every other variant registered
    so far (``nonrigid-fast``, ``rigid-3d``, ...), in :data:`REGISTERED_VARIANTS` order.
    Variants asked for (or the paper's) that have not been registered yet are left out with a
    warning. ``published`` gives the paper's liver Dice per variant for the
    ``liver_dice_published`` column (callers pass
    :func:`benchmark.analysis.published.published_liver_dice`); left empty without.
    """
    if variants is None:
        others = tuple(v for v in REGISTERED_VARIANTS if v not in REGISTRATIONS
                       and (variant_dir(cohort_root, v) / "cohort.json").exists())
        variants = (UNREGISTERED, *REGISTRATIONS, *others)
    source = Cohort(cohort_root)
    slices = {
        pid: touched_slices(source.load(pid, liver=False).lesion) for pid in source.patient_ids
    }
    published = dict(published or {})
    rows = []
    for variant in variants:
        folder = variant_dir(cohort_root, variant)
        if variant != UNREGISTERED and not (folder / "cohort.json").exists():
            log.warning("variant %s of %s not registered yet; left out of Table II",
                        variant, cohort_root)
            continue
        cohort = open_variant(cohort_root, variant)
        acc = _Accumulator()
        for pid in source.patient_ids:
            acc.add(cohort.load(pid, liver=True, displacement=True), slices[pid])
        rows.append(acc.row(variant, published))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    out = Path(cohort_root) / "variants"
    write_text(out / TABLE_CSV, table.to_csv(index=False, float_format="%.4f"))
    write_text(out / TABLE_MD, to_markdown(table))
    return table


def to_markdown(table: pd.DataFrame) -> str:
    """Table II as a Markdown table (4 decimals for Dice/NCC, 2 for mm)."""
    digits = {"liver_dice": 4, "liver_dice_published": 4, "ncc": 4,
              "residual_mm": 2, "residual_inplane_mm": 2}
    lines = ["| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    for _, row in table.iterrows():
        cells = []
        for col in table.columns:
            value = row[col]
            if col in digits:
                cells.append("-" if pd.isna(value) else f"{value:.{digits[col]}f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
