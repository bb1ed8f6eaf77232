"""The true misalignment of a cohort, measured from its stored displacement fields.

For every patient and non-portal phase: the mean length (mm) of the true displacement
``d(p)`` over the liver, where ``p`` runs over the phase's own liver mask (``d`` is indexed by
the phase's voxels); without that mask over the portal liver mask, without any liver mask over
the body (portal HU > -500). A cohort's misalignment is the mean over its patients' moving
phases. Patients without stored fields cannot be measured (ValueError naming the patient).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from benchmark import FIXED_PHASE
from benchmark.cohort import Cohort, Patient
from benchmark.robustness.deformation import BODY_HU, MOVING_PHASES

COLUMNS = ("patient", "split", "phase", "region", "mm")


def patient_misalignment(patient: Patient) -> list[tuple[str, str, float]]:
    """``(phase, region, mean |d| in mm)`` for each non-portal phase of one patient."""
    fields = patient.displacement or {}
    missing = [p for p in MOVING_PHASES if p not in fields]
    if missing:
        raise ValueError(
            f"patient {patient.id}: no true displacement stored for {', '.join(missing)}; "
            "only synthetic or ladder cohorts can be measured"
        )
    rows = []
    for phase in MOVING_PHASES:
        region, mask = _region(patient, phase)
        length = np.linalg.norm(fields[phase][mask].astype(np.float64), axis=-1)
        rows.append((phase, region, float(length.mean())))
    return rows


def _region(patient: Patient, phase: str) -> tuple[str, np.ndarray]:
    """The voxels a phase's misalignment is averaged over, and their name."""
    livers = patient.liver or {}
    for region, mask in (
        ("liver", livers.get(phase)),
        ("portal liver", livers.get(FIXED_PHASE)),
        ("body", patient.phases[FIXED_PHASE] > BODY_HU),
    ):
        if mask is not None and mask.any():
            return region, mask > 0
    raise ValueError(f"patient {patient.id}: no liver mask and no body voxels (HU > -500)")


def cohort_misalignment(cohort: Cohort, patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per patient and moving phase (:data:`COLUMNS`)."""
    rows = []
    for pid in patient_ids if patient_ids is not None else cohort.patient_ids:
        patient = cohort.load(pid, liver=True, displacement=True)
        rows += [(pid, patient.split, *row) for row in patient_misalignment(patient)]
    return pd.DataFrame(rows, columns=list(COLUMNS))
