"""Generate phantom patients and write them as a cohort."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

import benchmark
from benchmark import FIXED_PHASE, PHASES
from benchmark.cohort import Cohort, CohortWriter, Patient, assign_splits
from benchmark.phantom.anatomy import Anatomy, draw_anatomy
from benchmark.phantom.config import (
    FOV_MM,
    PAPER_SPLITS,
    SLICE_MM,
    PhantomConfig,
    check_splits,
)
from benchmark.phantom.enhancement import (
    LESION_TISSUES,
    N_TISSUES,
    Texture,
    draw_hu_table,
    lesion_hu,
    spleen_texture,
)
from benchmark.phantom.lesion import PointTest, draw_lesion
from benchmark.phantom.motion import (
    compose_bulk,
    displacement,
    draw_breath,
    draw_bulk,
    organ_scale,
    wall_weights,
)
from benchmark.phantom.noise import blur, ct_noise

LESION_PHASE_COUNTS = {"arterial": 91, "portal": 31, "delayed": 158}
"""Phases the paper's annotators drew the lesion masks on (of 280 patients)."""

GENERATOR_VERSION = 3
"""Stored in the manifest params: a cohort made by another generator version is not resumed."""
MIN_LESION_PX = 9
"""Smallest lesion diameter in pixels (on coarse grids smaller ones vanish in the paper's
11x11 mask smoothing and give no box)."""


def patient_id(index: int) -> str:
    return f"phantom{index:04d}"


def _grid(config: PhantomConfig, z_center: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pixel = config.spacing[1]
    xy = ((np.arange(config.size) + 0.5) * pixel - FOV_MM / 2).astype(np.float32)
    z = (z_center + (np.arange(config.slices) - (config.slices - 1) / 2) * SLICE_MM).astype(
        np.float32
    )
    return z, xy, xy.copy()


def _inside_liver(anatomy: Anatomy) -> PointTest:
    """Point test: liver (not vessels, kidney, IVC, ...) and not hidden by the static wall."""

    def test(qz: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        qz, qy, qx = (np.asarray(a, np.float32) for a in (qz, qy, qx))
        _, liver = anatomy.visceral_labels(qz, qy, qx)
        return liver & anatomy.in_cavity(qy, qx)

    return test


def _render(
    anatomy: Anatomy,
    static: np.ndarray,
    cavity: np.ndarray,
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    disp: np.ndarray | None,
    lut: np.ndarray,
    subsamples: int,
    texture: Texture | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise-free HU volume (slice-profile averaged), centre labels and liver mask of a phase.

    ``static`` and ``cavity`` are the static labels seen by this phase's grid (moved with its
    bulk motion); ``disp`` is its whole field (bulk and breathing).
    """
    yy, xx = np.meshgrid(y, x, indexing="ij")
    py, px = yy[cavity], xx[cavity]
    offsets = ((np.arange(subsamples) + 0.5) / subsamples - 0.5) * SLICE_MM
    centre = subsamples // 2
    hu = np.zeros(static.shape, np.float32)
    labels = static.copy()
    liver = np.zeros(static.shape, bool)
    for k in range(len(z)):
        if disp is None:
            dz = dy = dx = np.zeros(py.shape, np.float32)
        else:
            d = disp[k][cavity]
            dz, dy, dx = d[:, 0], d[:, 1], d[:, 2]
        qy, qx = py + dy, px + dx
        slack = float(np.abs(dy).max()) if dy.size else 0.0
        plane = static[k].copy()
        for s, offset in enumerate(offsets):
            qz = z[k] + np.float32(offset) + dz
            vis, liv = anatomy.visceral_labels(qz, qy, qx, py, slack)
            plane[cavity] = vis
            hu[k] += lut[plane]
            if texture is not None:
                hu[k][cavity] += texture.values(vis, qz, qy, qx)
            if s == centre:
                labels[k][cavity] = vis
                liver[k][cavity] = liv
    hu /= subsamples
    return hu, labels, liver


@dataclass
class Simulation:
    """A generated patient with its ground truth: anatomy and per-phase tissue label maps."""

    patient: Patient
    anatomy: Anatomy
    labels: dict[str, np.ndarray]  # phase -> [Z, Y, X] uint8 Tissue codes (slice centres)
    cavity: np.ndarray  # [Y, X] bool: where the moving (inside-of-wall) anatomy is


def make_patient(index: int, seed: int, config: PhantomConfig | None = None) -> Patient:
    """Generate one four-phase phantom patient, deterministic in ``(seed, index)``.

    Every phase is rendered from the same analytic anatomy sampled at displaced positions, so the
    lesion and liver masks of each phase are exact; the lesion mask stored is the one of the
    reference phase (chosen with the paper's annotator frequencies).
    """
    return simulate(index, seed, config).patient


def simulate(index: int, seed: int, config: PhantomConfig | None = None) -> Simulation:
    """:func:`make_patient` plus its ground-truth label maps (for tests and inspection)."""
    config = config or PhantomConfig()
    # Random streams: ``rng`` draws anatomy, lesion, HU, breathing, annotated phase, noise level
    # and texture in a fixed order and a fixed NUMBER of draws whatever ``motion_mm`` (motion
    # only scales its draws), the bulk shift has its own stream and each phase's noise another:
    # patients of the same (seed, index) differ only in their motion across motion settings.
    rng = np.random.default_rng([seed, index])
    anatomy = draw_anatomy(rng)
    z, y, x = _grid(config, float(rng.uniform(-12.0, 12.0)))
    liver_box = (
        np.min([lobe.bbox[0] for lobe in anatomy.liver], 0),
        np.max([lobe.bbox[1] for lobe in anatomy.liver], 0),
    )
    lesion, drawn_mm = draw_lesion(
        rng,
        _inside_liver(anatomy),
        (float(z[0]) - SLICE_MM / 2, float(z[-1]) + SLICE_MM / 2),
        np.array(liver_box),
        min_mm=MIN_LESION_PX * config.spacing[1],
    )
    anatomy = replace(anatomy, lesion=lesion)
    table = draw_hu_table(rng)
    lut = np.zeros((4, 256), np.float32)
    lut[:, :N_TISSUES] = table
    for tissue, values in lesion_hu(table, lesion.pattern, rng).items():
        lut[:, tissue] = values
    breaths = {p: draw_breath(rng, config.motion_mm) for p in PHASES if p != FIXED_PHASE}
    lesion_phase = str(
        rng.choice(list(LESION_PHASE_COUNTS), p=np.array(list(LESION_PHASE_COUNTS.values())) / 280)
    )
    lesion_phase = config.lesion_phase or lesion_phase  # drawn either way: later draws stay
    noise_sd = float(rng.uniform(*config.noise_hu))
    spleen = spleen_texture(rng)
    bulk_rng = np.random.default_rng([seed, index, 2])  # own stream: other draws stay as before
    centre = (anatomy.wall.cy, 0.0)
    bulks = {p: draw_bulk(bulk_rng, config.bulk_mm, centre) for p in breaths}

    static, cavity = anatomy.static_labels(z, y, x)
    weights = wall_weights(cavity, config.spacing[1])
    scale = organ_scale(z, y, x, [(k.center, k.axes) for k in anatomy.kidneys])
    phases, livers, disps, label_maps = {}, {}, {}, {}
    for i, phase in enumerate(PHASES):
        disp, seen, inside = None, static, cavity
        if phase != FIXED_PHASE:
            disp, moved = compose_bulk(
                displacement(breaths[phase], z, y, x, weights, scale), bulks[phase], y, x
            )
            seen, inside = anatomy.static_labels_at(z, *moved)
        texture = spleen if phase == "arterial" else None
        hu, labels, liver = _render(
            anatomy, seen, inside, z, y, x, disp, lut[i], config.z_subsamples, texture
        )
        noise = ct_noise(np.random.default_rng([seed, index, i, 1]), hu.shape, noise_sd)
        phases[phase] = blur(hu) + noise
        livers[phase] = liver.astype(np.uint8)
        disps[phase] = disp if disp is not None else np.zeros((*hu.shape, 3), np.float32)
        label_maps[phase] = labels
    meta = {
        "generator": "benchmark.phantom",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "index": index,
        "lesion_diameter_cm": round(lesion.diameter_mm / 10.0, 3),
        "lesion_diameter_drawn_cm": round(drawn_mm / 10.0, 3),
        "lesion_center_mm": [round(float(v), 2) for v in lesion.shape.center],
        "lesion_pattern": lesion.pattern,
        "lesion_capsule": lesion.capsule_mm > 0,
        "lesion_necrosis": lesion.necrosis > 0,
        "lesion_mosaic": bool(lesion.mosaic),
        "motion_mm": {p: [round(v, 3) for v in b.shift] for p, b in breaths.items()},
        "bulk": {
            p: {"shift_mm": [round(v, 3) for v in b.shift], "angle_deg": round(b.angle_deg, 3)}
            for p, b in bulks.items()
        },
        "noise_sd_hu": round(noise_sd, 2),
        "body_mm": [round(2 * anatomy.wall.by, 1), round(2 * anatomy.wall.bx, 1)],
    }
    patient = Patient(
        id=patient_id(index),
        phases=phases,
        lesion=np.isin(label_maps[lesion_phase], LESION_TISSUES).astype(np.uint8),
        lesion_phase=lesion_phase,
        spacing=config.spacing,
        origin=(float(z[0]), float(y[0]), float(x[0])),
        liver=livers,
        displacement=disps,
        meta=meta,
    )
    return Simulation(patient, anatomy, label_maps, cavity)


def _write_one(
    writer: CohortWriter, seed: int, config: PhantomConfig, splits: dict[str, str], index: int
) -> str:
    patient = make_patient(index, seed, config)
    patient.split = splits[patient.id]
    writer.write_patient(patient)
    return patient.id


def synthesize(
    out: str | Path,
    patients: int,
    seed: int,
    config: PhantomConfig | None = None,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    splits: tuple[int, int, int] = PAPER_SPLITS,
) -> Cohort:
    """Write a phantom cohort of ``patients`` patients to ``out`` and return it.

    Resumable: finished patients of an interrupted run with the same parameters are kept;
    different parameters are refused unless ``overwrite``. Output does not depend on ``workers``.
    ``splits``: train/val/test proportions (:func:`~benchmark.cohort.assign_splits`; default the
    paper's 216/54/10).
    """
    config = config or PhantomConfig()
    if patients < 1:
        raise ValueError(f"patients must be at least 1, got {patients}")
    splits = check_splits(splits)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    out = Path(out)
    params = {
        "patients": patients,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        **config.params(),
    }
    if splits != PAPER_SPLITS:  # cohorts with the paper's split keep their former params
        params["splits"] = list(splits)
    writer = CohortWriter(
        out,
        name=out.name or "phantom",
        kind="synthetic",
        params=params,
        provenance={
            "generator": "benchmark.phantom.synthesize",
            "phasebench": benchmark.__version__,
        },
        overwrite=overwrite,
    )
    ids = [patient_id(i) for i in range(patients)]
    split_of = assign_splits(ids, seed, splits)
    done = writer.done()
    todo = [i for i, pid in enumerate(ids) if pid not in done]
    job = partial(_write_one, writer, seed, config, split_of)
    bar = tqdm(total=len(todo), desc="synthesising", unit="patient", disable=not progress)
    with bar:
        if workers > 1 and len(todo) > 1:
            with multiprocessing.get_context("spawn").Pool(min(workers, len(todo))) as pool:
                for _ in pool.imap_unordered(job, todo):
                    bar.update()
        else:
            for index in todo:
                job(index)
                bar.update()
    return writer.finish(order=ids)
