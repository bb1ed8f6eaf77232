"""3D registration of a patient: each moving phase registered onto portal as one volume.

Breathing moves the liver mostly head to foot, through the slice plane, which a per-slice 2D
registration cannot follow; a 3D registration can. Everything else is carried as in 2D
(:mod:`registration.stage`): the liver masks of the moving phases and the lesion mask, when its
``lesion_phase`` is not portal, follow their phase's transform with nearest neighbour; the
variant stores the residual true displacement of synthetic patients; a phase whose
registration fails (an elastix error, non-finite output) stays unregistered, is logged with
status ``failed`` and listed in ``meta["registration"]["failed"]`` as ``[null, phase]`` (the
whole volume). The whole volume is registered and warped, not only the slices the detector
reads; Table II still evaluates those slices.

Log: one row per moving phase (``slice`` empty); its NCC is measured over the body voxels of
the slices the detector reads, all of them together.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage

from benchmark.cohort import Patient
from benchmark.vocabulary import FIXED_PHASE
from registration.backends import Backend, ElastixError, ParameterMap
from registration.metrics import MOVING_PHASES, body_ncc
from registration.presets import parameter_maps
from registration.variants import Variant

REGISTRATION_ERRORS = (ElastixError, FloatingPointError)
"""What an elastix failure raises (the backends turn elastix's own errors into ElastixError;
non-finite output is a FloatingPointError): logged per phase. Anything else is a bug and
propagates."""


def residual_volume(
    true: np.ndarray, transform: np.ndarray, spacing: tuple[float, float, float]
) -> np.ndarray:
    """True displacement left after a 3D registration.

    ``true`` is the phase's known field ``(Z, Y, X, 3)`` (dz, dy, dx) mm; ``transform`` the
    registration's ``T(x) - x`` in the same layout. As in 2D
    (:func:`registration.metrics.residual_displacement`) the residual is ``u(x) + d(x + u(x))``
    (trilinear interpolation of ``d``, nearest value outside the volume). Computed slice by
    slice to keep memory small.
    """
    if true.shape != transform.shape or true.shape[-1] != 3:
        raise ValueError(f"fields of shape {true.shape} and {transform.shape}: need two "
                         "(Z, Y, X, 3) fields of one shape")
    scale = np.asarray(spacing, np.float64)
    yy, xx = np.mgrid[: true.shape[1], : true.shape[2]].astype(np.float64)
    out = np.empty(true.shape, np.float32)
    for z in range(true.shape[0]):
        u = transform[z].astype(np.float64)
        coords = [z + u[..., 0] / scale[0], yy + u[..., 1] / scale[1], xx + u[..., 2] / scale[2]]
        for c in range(3):
            out[z, ..., c] = ndimage.map_coordinates(
                true[..., c], coords, order=1, mode="nearest") + u[..., c]
    return out


def register_volume(
    patient: Patient, variant: Variant, backend: Backend, slices: np.ndarray,
    on_phase: Callable[[], Any] | None = None,
    initial: dict[str, list[ParameterMap]] | None = None,
) -> tuple[Patient, list[dict[str, Any]], dict[str, list[ParameterMap]], list[list[Any]]]:
    """Register each moving phase of ``patient`` onto portal in 3D.

    ``slices``: the axial indices the detector reads (where the log measures NCC).
    ``initial``: per phase, a saved affine transform of the same volumes to start the B-spline
    map from (``nonrigid`` on a backend with ``reuses_affine``). Returns the variant patient
    (without its ``meta["registration"]``), the log rows, the transforms per phase and the
    failed ``[null, phase]`` pairs.
    """
    if variant.dims != 3:
        raise ValueError(f"register_volume registers 3D variants, not {variant.name}")
    initial = initial or {}
    maps = parameter_maps(variant)
    phases = {p: v.copy() for p, v in patient.phases.items()}
    liver = {p: v.copy() for p, v in patient.liver.items()} if patient.liver else None
    disp = {p: v.copy() for p, v in patient.displacement.items()} if patient.displacement else None
    lesion = patient.lesion.copy()
    fixed = patient.phases[FIXED_PHASE]
    spacing = tuple(float(s) for s in patient.spacing)
    rows: list[dict[str, Any]] = []
    transforms: dict[str, list[ParameterMap]] = {}
    failed: list[list[Any]] = []
    for phase in MOVING_PHASES:
        moving = patient.phases[phase]
        start_from = initial.get(phase)
        row = {"patient": patient.id, "slice": "", "phase": phase, "method": variant.method,
               "seconds": 0.0, "ncc_before": body_ncc(fixed[slices], moving[slices]),
               "ncc_after": float("nan"), "status": "failed", "error": "",
               "lesion_px_before": "", "lesion_px_after": "", "initial": ""}
        rows.append(row)
        start = time.perf_counter()
        try:
            reg = backend.register(fixed, moving, spacing, maps[1:] if start_from else maps,
                                   initial=start_from)
            if not np.isfinite(reg.warped).all():
                raise FloatingPointError("registration produced non-finite intensities")
            new_liver = backend.warp_mask(liver[phase], reg) if liver and phase in liver else None
            new_lesion = (backend.warp_mask(patient.lesion, reg)
                          if patient.lesion_phase == phase else None)
            new_disp = (residual_volume(disp[phase], backend.displacement(reg), spacing)
                        if disp and phase in disp else None)
            phase_maps = backend.transform_maps(reg)
        except REGISTRATION_ERRORS as err:  # logged and flagged; the phase stays unregistered
            row["error"] = f"{type(err).__name__}: {err}"[:300]
            failed.append([None, phase])
        else:
            phases[phase] = reg.warped.astype(np.float32)
            if new_liver is not None:
                liver[phase] = new_liver
            if new_lesion is not None:
                lesion = new_lesion
                row.update(lesion_px_before=int(patient.lesion.sum()),
                           lesion_px_after=int(new_lesion.sum()))
            if new_disp is not None:
                disp[phase] = new_disp
            transforms[phase] = phase_maps
            row.update(status="registered",
                       ncc_after=body_ncc(fixed[slices], reg.warped[slices]),
                       initial="affine" if start_from else "")
        row["seconds"] = time.perf_counter() - start
        if on_phase is not None:
            on_phase()
    out = Patient(
        id=patient.id, phases=phases, lesion=lesion, lesion_phase=patient.lesion_phase,
        spacing=patient.spacing, origin=patient.origin, split=patient.split, liver=liver,
        displacement=disp, meta=dict(patient.meta),
    )
    return out, rows, transforms, failed
