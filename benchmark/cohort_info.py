"""Cohort summary (``data info``) and the paper's Fig. 1 view of one slice (``data show``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from benchmark import FIXED_PHASE, PHASES
from benchmark.atomic import atomic_path
from benchmark.boxes import mask_to_boxes, smooth_mask
from benchmark.cohort import SPLITS, Cohort, load_volume
from registration.metrics import mean_nonzero, slice_dice

WINDOW_HU = (-150.0, 250.0)
"""Display window of the paper's input scaling."""


def lesion_diameter_cm(mask: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Equivalent-sphere diameter (cm) of a lesion mask; 0 for an empty mask."""
    volume_mm3 = float(mask.astype(bool).sum()) * float(np.prod(spacing))
    return 0.1 * (6.0 * volume_mm3 / np.pi) ** (1.0 / 3.0)


def summarize(cohort: Cohort) -> dict[str, Any]:
    """Counts, slices, lesion sizes and phases, per-phase liver Dice to portal of a cohort.

    Reads only the masks (not the HU volumes). Liver Dice is the paper's measure: per axial
    slice, averaged over non-zero slices, then over patients.
    """
    splits = Counter(cohort.record(pid)["split"] for pid in cohort.patient_ids)
    slices, diameters, dice = [], [], {p: [] for p in PHASES if p != FIXED_PHASE}
    for pid in cohort.patient_ids:
        rec = cohort.record(pid)
        folder = cohort.patient_dir(pid)
        slices.append(int(rec["shape"][0]))
        lesion, spacing, _ = load_volume(folder / "lesion.nii.gz")
        diameters.append(lesion_diameter_cm(lesion, spacing))
        livers = rec.get("liver_phases") or []
        if FIXED_PHASE in livers:
            fixed = load_volume(folder / f"liver_{FIXED_PHASE}.nii.gz")[0]
            for phase in dice:
                if phase in livers:
                    moving = load_volume(folder / f"liver_{phase}.nii.gz")[0]
                    dice[phase].append(mean_nonzero(slice_dice(moving, fixed)))
    first = cohort.record(cohort.patient_ids[0]) if len(cohort) else {}
    return {
        "root": str(cohort.root),
        "name": cohort.name,
        "kind": cohort.kind,
        "variant": cohort.variant,
        "patients": len(cohort),
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "slices": _stats(slices),
        "shape_yx": first.get("shape", [0, 0, 0])[1:],
        "spacing_mm": first.get("spacing"),
        "lesion_diameter_cm": _stats(diameters),
        "lesion_phases": dict(
            Counter(cohort.record(pid)["lesion_phase"] for pid in cohort.patient_ids)
        ),
        "liver_dice_to_portal": {p: _stats(v) for p, v in dice.items() if v},
    }


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray([v for v in values if np.isfinite(v)], float)
    if arr.size == 0:
        return {"n": 0}
    return {
        "n": int(arr.size),
        "mean": float(arr.mean()),
        "sd": float(arr.std()),
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Human-readable text of :func:`summarize`."""

    def stat(s: dict[str, float], fmt: str = ".2f") -> str:
        if not s.get("n"):
            return "n/a"
        return f"{s['mean']:{fmt}} +- {s['sd']:{fmt}} (min {s['min']:{fmt}}, max {s['max']:{fmt}})"

    lines = [
        f"cohort    {summary['root']} ({summary['kind']}, variant {summary['variant']})",
        f"patients  {summary['patients']}: "
        + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()),
        f"grid      {summary['shape_yx']} px, spacing (z, y, x) {summary['spacing_mm']} mm",
        f"slices    {stat(summary['slices'], '.1f')}",
        f"lesion    diameter {stat(summary['lesion_diameter_cm'])} cm (equivalent sphere)",
        "mask on   " + ", ".join(f"{k} {v}" for k, v in sorted(summary["lesion_phases"].items())),
    ]
    if summary["liver_dice_to_portal"]:
        lines.append("liver Dice to portal (per slice, mean over non-zero slices):")
        for phase, s in summary["liver_dice_to_portal"].items():
            lines.append(f"  {phase:<12} {stat(s, '.3f')}")
    else:
        lines.append("liver Dice to portal: no per-phase liver masks")
    return "\n".join(lines)


def best_slice(lesion: np.ndarray) -> int:
    """Slice with the largest lesion area (the middle slice when there is no lesion)."""
    areas = lesion.reshape(lesion.shape[0], -1).sum(axis=1)
    return int(np.argmax(areas)) if areas.any() else lesion.shape[0] // 2


def show(cohort: Cohort, patient_id: str, out: str | Path, z: int | None = None) -> Path:
    """Draw the four phases of one slice with the lesion contour and boxes (paper's Fig. 1).

    The contour is that of the smoothed mask the paper trained on; boxes come from
    :func:`benchmark.boxes.mask_to_boxes`. Writes a PNG atomically and returns its path.
    """
    patient = cohort.load(patient_id, liver=False)
    depth = patient.shape[0]
    z = best_slice(patient.lesion) if z is None else z
    if not 0 <= z < depth:
        raise ValueError(f"--slice {z} is outside patient {patient_id}'s 0..{depth - 1}")
    mask = smooth_mask(patient.lesion[z])
    boxes = mask_to_boxes(patient.lesion[z])
    fig = Figure(figsize=(4 * len(PHASES), 4.4))
    axes = fig.subplots(1, len(PHASES))
    for ax, phase in zip(axes, PHASES, strict=True):
        ax.imshow(patient.phases[phase][z], cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1])
        if mask.any():
            ax.contour(mask, levels=[0.5], colors="red", linewidths=0.8)
        for x0, y0, x1, y1 in boxes:
            ax.add_patch(
                Rectangle(
                    (x0 - 0.5, y0 - 0.5),
                    x1 - x0,
                    y1 - y0,
                    fill=False,
                    edgecolor="yellow",
                    linewidth=0.8,
                )
            )
        marker = " (mask)" if phase == patient.lesion_phase else ""
        ax.set_title(f"{phase}{marker}", fontsize=10)
        ax.set_axis_off()
    fig.suptitle(
        f"{patient_id}  slice {z}/{depth - 1}  window {WINDOW_HU[0]:.0f}..{WINDOW_HU[1]:.0f} HU",
        fontsize=10,
    )
    fig.tight_layout()
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    except OSError as err:
        raise OSError(f"{out}: cannot write PNG ({err.strerror or err})") from None
    return out
