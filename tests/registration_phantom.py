"""Small four-phase patients with a known displacement, for registration tests.

:func:`make_patient`: analytic, in-plane displacement. :func:`shifted_patient`: a small project
phantom whose moving phases are shifted by a known 3D translation.

The analytic anatomy (body, fat layer, lobulated liver with vessels and texture, spine, aorta, kidney,
lesion) is drawn analytically in the portal frame; each moving phase samples it at
``p + d(p)``, so ``d`` is exactly the cohort's displacement convention. ``d`` combines a
small rigid movement and organ motion sliding along the body wall.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from benchmark import FIXED_PHASE, PHASES
from benchmark.cohort import Cohort, CohortWriter, Patient
from benchmark.phantom import PhantomConfig
from benchmark.phantom import make_patient as make_project_patient

FOV_MM = 380.0
# HU per tissue: precontrast, arterial, portal, delayed
HU = {
    "air": (-1000, -1000, -1000, -1000),
    "fat": (-100, -100, -100, -100),
    "soft": (40, 50, 60, 55),
    "liver": (60, 80, 120, 95),
    "vessel": (40, 150, 190, 120),
    "aorta": (45, 330, 160, 120),
    "kidney": (35, 170, 160, 140),
    "bone": (400, 400, 400, 400),
    "lesion": (45, 150, 100, 80),
}


def _labels(qy: np.ndarray, qx: np.ndarray, z: int, lesion_on: bool) -> dict[str, np.ndarray]:
    """Boolean maps of each tissue at points (qy, qx) in mm from the image centre."""
    theta = np.arctan2(qy + 10, qx + 45)
    lobe = 1.0 + 0.12 * np.sin(3 * theta + 0.3 * z) + 0.05 * np.cos(5 * theta)
    liver = ((qx + 45) / 80) ** 2 + ((qy + 10) / 62) ** 2 < lobe**2
    vessels = np.zeros_like(liver)
    for vy, vx, r in ((-20, -60, 6), (10, -30, 5), (-5, -95, 4), (35, -20, 4)):
        vessels |= (qy - vy) ** 2 + (qx - vx) ** 2 < r**2
    return {
        "body": (qx / 165) ** 2 + (qy / 125) ** 2 < 1,
        "soft": (qx / 150) ** 2 + (qy / 110) ** 2 < 1,
        "liver": liver,
        "vessel": liver & vessels,
        "lesion": liver & ((qy - 15) ** 2 + (qx + 70) ** 2 < 14**2) & lesion_on,
        "aorta": (qy - 45) ** 2 + (qx - 15) ** 2 < 11**2,
        "kidney": ((qx - 70) / 25) ** 2 + ((qy - 45) / 35) ** 2 < 1,
        "bone": (qy - 85) ** 2 + qx**2 < 20**2,
    }


def _hu(labels: dict[str, np.ndarray], index: int) -> np.ndarray:
    image = np.full(labels["body"].shape, HU["air"][index], np.float32)
    image[labels["body"]] = HU["fat"][index]
    for tissue in ("soft", "liver", "vessel", "aorta", "kidney", "bone", "lesion"):
        image[labels[tissue]] = HU[tissue][index]
    return image


def displacement(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, scale: float
) -> np.ndarray:
    """In-plane field ``(Y, X, 3)`` (dz=0, dy, dx) mm.

    A rigid patient movement with an antero-posterior expansion of the whole abdomen
    (affine), plus organ motion sliding along the body wall (non-rigid): the abdominal
    content moves on, the wall and spine do not.
    """
    ty, tx = rng.uniform(3.0, 5.0, 2) * rng.choice([-1, 1], 2) * scale
    angle = np.deg2rad(rng.uniform(1.0, 2.0) * rng.choice([-1, 1]) * scale)
    breath = rng.uniform(0.05, 0.08) * rng.choice([-1, 1]) * scale  # AP expansion of the wall
    ry = np.cos(angle) * yy - np.sin(angle) * xx - yy + breath * yy
    rx = np.sin(angle) * yy + np.cos(angle) * xx - xx
    oy, ox = rng.uniform(3.0, 5.0, 2) * rng.choice([-1, 1], 2) * scale
    pixel = float(abs(xx[0, 1] - xx[0, 0]))
    inside = ((xx / 135) ** 2 + (yy / 95) ** 2 < 1).astype(np.float64)
    organ = ndimage.gaussian_filter(inside, 6.0 / pixel)
    field = np.zeros((*yy.shape, 3), np.float32)
    field[..., 1] = ty + ry + organ * oy
    field[..., 2] = tx + rx + organ * ox
    return field


def make_patient(
    pid: str,
    seed: int,
    *,
    size: int = 64,
    slices: int = 3,
    lesion_slices: tuple[int, ...] = (1,),
    lesion_phase: str = FIXED_PHASE,
    motion: float = 1.0,
) -> Patient:
    """One patient; ``motion`` scales every displacement component (0 = aligned phases)."""
    rng = np.random.default_rng(seed)
    pixel = FOV_MM / size
    centre = (size - 1) / 2
    yy, xx = (np.mgrid[:size, :size].astype(np.float64) - centre) * pixel
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (slices, size, size)), (0, 1.5, 1.5))
    texture *= 8.0 / texture.std()
    phases = {p: np.zeros((slices, size, size), np.float32) for p in PHASES}
    liver = {p: np.zeros((slices, size, size), np.uint8) for p in PHASES}
    disp = {p: np.zeros((slices, size, size, 3), np.float32) for p in PHASES}
    lesion = np.zeros((slices, size, size), np.uint8)
    for index, phase in enumerate(PHASES):
        field = displacement(rng, yy, xx, 0.0 if phase == FIXED_PHASE else motion)
        qy, qx = yy + field[..., 1], xx + field[..., 2]
        coords = [qy / pixel + centre, qx / pixel + centre]
        for z in range(slices):
            labels = _labels(qy, qx, z, z in lesion_slices)
            tex = ndimage.map_coordinates(texture[z], coords, order=1, mode="nearest")
            noise = rng.normal(0, 6.0, (size, size))
            phases[phase][z] = _hu(labels, index) + np.where(labels["body"], tex + noise, 0)
            liver[phase][z] = labels["liver"]
            disp[phase][z] = field
            if phase == lesion_phase:
                lesion[z] = labels["lesion"]
    return Patient(
        pid, phases, lesion, lesion_phase, (5.0, pixel, pixel), liver=liver, displacement=disp
    )


def make_cohort(root: Path, patients: list[Patient], name: str = "regtest") -> Cohort:
    writer = CohortWriter(
        root, name=name, kind="synthetic", params={"ids": [p.id for p in patients]}
    )
    for patient in patients:
        writer.write_patient(patient)
    return writer.finish()


SHIFT = np.array([1.4, 2.5, -1.8])
"""Known shift of the moving phases in voxels (z, y, x): moving(p) = portal(p + SHIFT)."""


def shifted_patient(size: int = 64, slices: int = 16) -> Patient:
    """A project phantom patient (aligned phases) whose moving phases are shifted by
    :data:`SHIFT`; its displacement fields say so exactly."""
    config = PhantomConfig(size=size, slices=slices, motion_mm=0.0, bulk_mm=0.0, z_subsamples=1)
    patient = make_project_patient(0, 0, config)
    mm = (SHIFT * np.array(patient.spacing)).astype(np.float32)
    for phase in PHASES:
        if phase == FIXED_PHASE:
            continue
        patient.phases[phase] = ndimage.shift(patient.phases[phase], -SHIFT, order=1,
                                              mode="nearest")
        patient.liver[phase] = _shift_mask(patient.liver[phase])
        patient.displacement[phase] = np.broadcast_to(mm, (*patient.shape, 3)).copy()
    if patient.lesion_phase != FIXED_PHASE:
        patient.lesion = _shift_mask(patient.lesion)
    return patient


def _shift_mask(mask: np.ndarray) -> np.ndarray:
    return (ndimage.shift(mask.astype(np.float32), -SHIFT, order=1) > 0.5).astype(np.uint8)
