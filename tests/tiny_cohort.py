"""Tiny hand-made cohorts for the dataset / training / runner tests (no phantom needed).

Phase ``i`` has base HU ``-100 + 60 * i`` plus ``4 * z`` per slice, so tests can read the
channel order back; lesions are bright discs (+120 HU) on a few middle slices.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark import PHASES
from benchmark.cohort import Cohort, CohortWriter, Patient, assign_splits


def phase_base(phase_index: int, z: int) -> float:
    return -100.0 + 60.0 * phase_index + 4.0 * z


def make_cohort(
    root: Path,
    patients: int = 6,
    size: int = 64,
    slices: int = 6,
    seed: int = 0,
    noise: float = 8.0,
) -> Cohort:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:03d}" for i in range(patients)]
    splits = assign_splits(ids, seed)
    writer = CohortWriter(root, name=root.name, kind="test", params={"seed": seed, "n": patients})
    yy, xx = np.mgrid[:size, :size]
    for pid in ids:
        lesion = np.zeros((slices, size, size), np.uint8)
        cy, cx = rng.uniform(0.25 * size, 0.75 * size, 2)
        r = rng.uniform(0.08 * size, 0.16 * size)
        lesion[1 : slices - 1] = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)[None]
        phases = {}
        for i, phase in enumerate(PHASES):
            base = np.array([phase_base(i, z) for z in range(slices)], np.float32)[:, None, None]
            vol = base + rng.normal(0, noise, (slices, size, size)).astype(np.float32)
            phases[phase] = vol + 120.0 * lesion
        writer.write_patient(
            Patient(pid, phases, lesion, "portal", (2.0, 1.0, 1.0), split=splits[pid])
        )
    return writer.finish()
