"""Known misalignment for a real cohort: smooth random deformations of controlled amplitude.

A real cohort has no true displacement, so the ladder starts from its best-aligned data (the
non-rigid registered variant) and misaligns it again by a known amount. For every patient and
non-portal phase a smooth random 3D field ``u`` (mm, components ``dz, dy, dx``) is drawn:

* a translation in a uniformly random 3D direction (breath-hold and table shifts move the
  whole liver), plus a smooth non-rigid part of separable low-frequency cosines (wavelengths
  90-220 mm, as the phantom's, :mod:`benchmark.phantom.motion`), a quarter of the translation
  per term;
* scaled so that its mean length over the patient's portal liver (over the body, HU > -500,
  without a liver mask) is exactly the level in mm. Each patient and phase draws its shape
  from its own stream ``(seed, patient index, phase index)``, so every level applies the same
  shape and only the amplitude changes; level 0 copies the data unchanged.

The phase is resampled as ``new(p) = old(p + u(p))`` (linear for HU, nearest neighbour for its
liver mask, as registration carries masks), so the anatomy shown at ``p`` lies at ``p + u(p)``
in the portal phase: ``u`` is stored as the phase's true displacement in the cohort format
(:class:`benchmark.cohort.Patient`), like the phantom's. When the source variant stores a true
residual field ``r`` (a registered phantom cohort), the stored field is the composition
``u(p) + r(p + u(p))``; otherwise the registered data are taken as aligned and ``u`` is stored.

The portal phase and the lesion mask are not touched: the ladder keeps every label in the
fixed (portal) frame, so it measures what misaligned *inputs* cost (a lesion mask drawn on
another phase has been carried to portal by the registration). The patient's ``lesion_phase``
is recorded as portal and the phase it was drawn on is kept in ``meta``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates

from benchmark import FIXED_PHASE, PHASES
from benchmark.cohort import Cohort, CohortWriter, Patient
from benchmark.phantom.motion import jacobian_determinant, quantize

MOVING_PHASES = tuple(p for p in PHASES if p != FIXED_PHASE)
WAVELENGTH_MM = (90.0, 220.0)
WAVE_SHARE = 0.25
"""Amplitude of each cosine term relative to the translation."""
WAVES_PER_COMPONENT = 3
BODY_HU = -500.0
MIN_JACOBIAN = 0.2
"""A field whose Jacobian determinant falls below this anywhere is refused (it would fold)."""
COARSE_MM = 4.0
VERSION = 1


@dataclass(frozen=True)
class FieldShape:
    """Random parameters of a unit field: translation direction and cosine terms."""

    direction: tuple[float, float, float]
    waves: tuple[tuple[float, ...], ...]  # per term: comp, amp, kz, pz, ky, py, kx, px

    @classmethod
    def draw(cls, rng: np.random.Generator) -> FieldShape:
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        waves = []
        for comp in range(3):
            for _ in range(WAVES_PER_COMPONENT):
                k = 2 * np.pi / rng.uniform(*WAVELENGTH_MM, 3)
                phase = rng.uniform(0, 2 * np.pi, 3)
                amp = WAVE_SHARE * rng.normal()
                waves.append((comp, amp, k[0], phase[0], k[1], phase[1], k[2], phase[2]))
        return cls(
            tuple(float(v) for v in direction), tuple(tuple(float(v) for v in w) for w in waves)
        )

    def field(self, shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
        """The field ``[Z, Y, X, 3]`` (mm, float32) on a grid centred on the volume: a 1 mm
        translation plus the cosine terms."""
        z, y, x = (
            ((np.arange(n) - (n - 1) / 2) * s).astype(np.float32)
            for n, s in zip(shape, spacing, strict=True)
        )
        out = np.empty((*shape, 3), np.float32)
        out[:] = np.asarray(self.direction, np.float32)
        for comp, amp, kz, pz, ky, py, kx, px in self.waves:
            plane = np.outer(np.cos(ky * y + py), np.cos(kx * x + px)).astype(np.float32)
            fz = (amp * np.cos(kz * z + pz)).astype(np.float32)
            out[..., int(comp)] += fz[:, None, None] * plane[None]
        return out


def region(patient: Patient) -> np.ndarray:
    """Where the amplitude is set: the portal liver mask, else the body (portal HU > -500)."""
    liver = (patient.liver or {}).get(FIXED_PHASE)
    if liver is not None and liver.any():
        return liver > 0
    return patient.phases[FIXED_PHASE] > BODY_HU


def draw_fields(
    patient: Patient, index: int, amplitude_mm: float, seed: int
) -> dict[str, np.ndarray]:
    """Per non-portal phase: the field ``[Z, Y, X, 3]`` (mm, float32) of mean length
    ``amplitude_mm`` over :func:`region`; ValueError when it would fold."""
    inside = region(patient)
    if not inside.any():
        raise ValueError(f"patient {patient.id}: no liver mask and no body voxels (HU > -500)")
    fields = {}
    for phase in MOVING_PHASES:
        shape = FieldShape.draw(np.random.default_rng([seed, index, PHASES.index(phase)]))
        field = shape.field(patient.shape, patient.spacing)
        scale = amplitude_mm / float(np.linalg.norm(field[inside], axis=-1).mean())
        worst = _min_jacobian(shape, scale, patient)
        if worst < MIN_JACOBIAN:
            raise ValueError(
                f"patient {patient.id}, {phase}: a {amplitude_mm:g} mm deformation would fold "
                f"(Jacobian determinant down to {worst:.2f}); use smaller levels"
            )
        field *= np.float32(scale)
        fields[phase] = quantize(field)
    return fields


def _min_jacobian(shape: FieldShape, scale: float, patient: Patient) -> float:
    """Smallest Jacobian determinant of ``scale`` x the field, on a grid of about 4 mm (the
    field varies over 90 mm and more, so the coarse grid sees every fold)."""
    if scale == 0:
        return 1.0
    extent = [n * s for n, s in zip(patient.shape, patient.spacing, strict=True)]
    counts = tuple(max(3, int(np.ceil(e / COARSE_MM)) + 1) for e in extent)
    steps = tuple(e / (n - 1) for e, n in zip(extent, counts, strict=True))
    coarse = shape.field(counts, steps) * np.float32(scale)
    return float(jacobian_determinant(coarse, steps).min())


def _sample(
    volume: np.ndarray, field: np.ndarray, spacing: tuple[float, float, float], order: int
) -> np.ndarray:
    """``volume`` at ``p + field(p)`` (field in mm), one output slice at a time."""
    out = np.empty(field.shape[:3], np.float32)
    _, ny, nx = field.shape[:3]
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    step = np.asarray(spacing, np.float64)
    for k in range(field.shape[0]):
        f = field[k].astype(np.float64)
        coords = np.stack(
            [k + f[..., 0] / step[0], yy + f[..., 1] / step[1], xx + f[..., 2] / step[2]]
        )
        out[k] = map_coordinates(volume, coords, order=order, mode="nearest")
    return out


def compose(
    field: np.ndarray, residual: np.ndarray, spacing: tuple[float, float, float]
) -> np.ndarray:
    """True displacement after deforming a phase by ``field`` whose own true displacement was
    ``residual``: ``u(p) + r(p + u(p))`` (both ``[Z, Y, X, 3]``, mm)."""
    out = np.stack([_sample(residual[..., c], field, spacing, 1) for c in range(3)], axis=-1)
    return quantize(out + field)


def deform_patient(patient: Patient, fields: dict[str, np.ndarray], about: dict) -> Patient:
    """The patient with every phase in ``fields`` resampled, its liver mask carried and its
    true displacement stored; portal and the lesion mask stay as they are."""
    phases = dict(patient.phases)
    liver = dict(patient.liver) if patient.liver else None
    disp = dict(patient.displacement or {})
    for phase, field in fields.items():
        residual = disp.get(phase)
        if not field.any():
            disp[phase] = residual if residual is not None else field
            continue
        phases[phase] = _sample(patient.phases[phase], field, patient.spacing, 1)
        if liver and phase in liver:
            moved = _sample(liver[phase], field, patient.spacing, 0)
            liver[phase] = (moved > 0.5).astype(np.uint8)
        disp[phase] = field if residual is None else compose(field, residual, patient.spacing)
    disp.setdefault(FIXED_PHASE, np.zeros((*patient.shape, 3), np.float32))
    meta = {
        **patient.meta,
        "deformation": {**about, "lesion_phase_drawn": patient.lesion_phase},
    }
    return Patient(
        id=patient.id,
        phases=phases,
        lesion=patient.lesion,
        lesion_phase=FIXED_PHASE,
        spacing=patient.spacing,
        origin=patient.origin,
        split=patient.split,
        liver=liver,
        displacement=disp,
        meta=meta,
    )


def deform_cohort(
    source: Cohort, out: str | Path, name: str, amplitude_mm: float, seed: int
) -> Cohort:
    """Write ``source`` deformed by ``amplitude_mm`` to ``out`` (resumable; kept when complete
    with the same parameters)."""
    if not (np.isfinite(amplitude_mm) and amplitude_mm >= 0):
        raise ValueError(f"deformation amplitude must be finite and >= 0 mm, got {amplitude_mm}")
    params = {
        "deformation": "benchmark.robustness.deformation",
        "version": VERSION,
        "amplitude_mm": float(amplitude_mm),
        "seed": int(seed),
        "source": str(source.root.resolve()),
        "source_variant": source.variant,
        "source_params": source.manifest.get("params", {}),
    }
    writer = CohortWriter(
        out,
        name=name,
        kind=source.kind,
        params=params,
        provenance={"source": str(source.root.resolve()), "fixed_phase": FIXED_PHASE},
    )
    done = writer.done()
    about = {"amplitude_mm": float(amplitude_mm), "seed": int(seed), "source": source.variant}
    for index, pid in enumerate(source.patient_ids):
        if pid in done:
            continue
        patient = source.load(pid, liver=True, displacement=True)
        fields = draw_fields(patient, index, amplitude_mm, seed)
        writer.write_patient(deform_patient(patient, fields, about))
    return writer.finish(order=source.patient_ids)
