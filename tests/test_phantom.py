"""Synthetic phantom: HU per tissue and phase, HCC patterns, noise, motion, determinism."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_dilation, binary_erosion, map_coordinates

from benchmark import FIXED_PHASE, PHASES
from benchmark.boxes import mask_to_boxes
from benchmark.phantom import DEFAULT_MOTION_MM, PhantomConfig, make_patient, synthesize
from benchmark.phantom.config import DEFAULT_BULK_MM as BULK_MM
from benchmark.phantom.enhancement import LESION_TISSUES, Tissue
from benchmark.phantom.lesion import draw_diameter_mm
from benchmark.phantom.motion import jacobian_determinant
from benchmark.phantom.synth import simulate
from registration.metrics import liver_dice, mean_nonzero

# Published HU ranges (precontrast, arterial, portal, delayed); None = not checked here.
FACT_RANGES = {
    Tissue.LIVER: [(55, 65), None, (110, 125), (90, 100)],
    Tissue.AORTA: [(40, 50), (290, 360), (150, 170), (110, 130)],
    Tissue.PORTAL_VEIN: [(35, 45), (135, 155), (160, 200), (110, 130)],
    Tissue.SPLEEN: [(35, 55), None, None, (95, 105)],
    Tissue.KIDNEY_CORTEX: [(30, 50), (150, 200), (150, 180), (130, 160)],
    Tissue.FAT: [(-120, -90)] * 4,
    Tissue.MUSCLE: [(10, 55), None, None, None],
}
TOLERANCE_HU = 3.0  # residual partial volume and noise in a mean over an eroded ROI

ROI_CONFIG = PhantomConfig(size=160, slices=24)


def _roi(labels: np.ndarray, tissue: int) -> np.ndarray:
    """Voxels of ``tissue`` at least one pixel in-plane and one slice away from other tissues."""
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True
    structure[:, 1, 1] = True
    return binary_erosion(labels == tissue, structure)


@pytest.fixture(scope="module")
def sim():
    """Seed 0, patient 8: a typical 4.6 cm HCC with a capsule, no necrosis, no mosaic."""
    result = simulate(8, 0, ROI_CONFIG)
    meta = result.patient.meta
    assert meta["lesion_pattern"] == "typical" and meta["lesion_diameter_cm"] >= 3.0
    assert not meta["lesion_necrosis"] and not meta["lesion_mosaic"]
    return result


def _mean(sim, phase: str, tissue: int) -> float:
    roi = _roi(sim.labels[phase], tissue)
    assert roi.sum() > 20, f"too few {tissue.name} voxels in {phase}"
    return float(sim.patient.phases[phase][roi].mean())


def test_tissue_means_inside_published_ranges(sim):
    for tissue, ranges in FACT_RANGES.items():
        for phase, bounds in zip(PHASES, ranges, strict=True):
            if bounds is None:
                continue
            value = _mean(sim, phase, tissue)
            low, high = bounds
            assert low - TOLERANCE_HU <= value <= high + TOLERANCE_HU, (tissue.name, phase, value)
    liver_gain = _mean(sim, "arterial", Tissue.LIVER) - _mean(sim, "precontrast", Tissue.LIVER)
    assert 15 - TOLERANCE_HU <= liver_gain <= 25 + TOLERANCE_HU
    spleen_gain = _mean(sim, "arterial", Tissue.SPLEEN) - _mean(sim, "precontrast", Tissue.SPLEEN)
    assert 97 - TOLERANCE_HU <= spleen_gain <= 108 + TOLERANCE_HU


def test_typical_hcc_enhances_then_washes_out(sim):
    means = {p: (_mean(sim, p, Tissue.LESION), _mean(sim, p, Tissue.LIVER)) for p in PHASES}
    lesion, liver = means["arterial"]
    assert lesion > liver + 15
    for phase in ("portal", "delayed"):
        lesion, liver = means[phase]
        assert lesion < liver - 3, phase
    lesion, liver = means["delayed"]
    assert liver / lesion >= 1.07  # the washout criterion of the facts table


def test_noise_sd_and_spatial_correlation(sim):
    for phase in PHASES:
        roi = _roi(sim.labels[phase], Tissue.LIVER)
        roi &= np.roll(roi, 1, axis=2)  # pairs of horizontal neighbours inside the liver
        image = sim.patient.phases[phase]
        a, b = image[roi], np.roll(image, 1, axis=2)[roi]
        assert 10.0 <= a.std() <= 15.0 + 0.5, (phase, a.std())
        corr = np.corrcoef(a, b)[0, 1]
        assert corr > 0.2, (phase, corr)


def test_spleen_heterogeneous_only_in_arterial_phase(sim):
    sd = {p: sim.patient.phases[p][_roi(sim.labels[p], Tissue.SPLEEN)].std() for p in PHASES}
    assert sd["arterial"] > 1.3 * sd["portal"]
    assert sd["portal"] < 16.0  # homogeneous: noise only


def test_lesion_mask_is_the_reference_phase_lesion(sim):
    patient = sim.patient
    for phase in PHASES:
        lesion = np.isin(sim.labels[phase], LESION_TISSUES)
        if phase == patient.lesion_phase:
            assert np.array_equal(lesion, patient.lesion > 0)
        else:
            assert not np.array_equal(lesion, patient.lesion > 0), phase  # moved with breathing
    assert patient.lesion_phase in ("arterial", "portal", "delayed")


def test_masks_displacements_and_static_wall(sim):
    patient = sim.patient
    assert set(patient.liver) == set(PHASES) and set(patient.displacement) == set(PHASES)
    assert not patient.displacement[FIXED_PHASE].any()
    for phase in PHASES:
        liver = np.isin(sim.labels[phase], (Tissue.LIVER, Tissue.HEPATIC_VEIN, *LESION_TISSUES))
        assert np.all(patient.liver[phase][liver] == 1)


def test_wall_and_bones_follow_the_bulk_table_shift(sim):
    """Outside the organs the field is exactly the phase's rigid in-plane shift (meta)."""
    patient = sim.patient
    wall_cy = sim.anatomy.wall.cy
    y = patient.origin[1] + np.arange(ROI_CONFIG.size) * patient.spacing[1]
    yy, xx = np.meshgrid(y, y, indexing="ij")
    for phase, bulk in patient.meta["bulk"].items():
        a = np.deg2rad(bulk["angle_deg"])
        ry, rx = yy - wall_cy, xx
        expected_y = np.cos(a) * ry - np.sin(a) * rx + wall_cy + bulk["shift_mm"][0] - yy
        expected_x = np.sin(a) * ry + np.cos(a) * rx + bulk["shift_mm"][1] - xx
        # two pixels off the phase's moved cavity (the breathing field there is interpolated)
        cavity = sim.anatomy.in_cavity(yy + expected_y, xx + expected_x)
        wall = ~binary_dilation(cavity, iterations=2)
        assert wall.sum() > 0.3 * wall.size, phase
        disp = patient.displacement[phase]
        assert np.abs(disp[:, wall, 0]).max() < 1e-6, phase
        assert np.abs(disp[:, wall, 1] - expected_y[wall]).max() < 0.01, phase
        assert np.abs(disp[:, wall, 2] - expected_x[wall]).max() < 0.01, phase
        assert 0.5 * BULK_MM <= np.hypot(*bulk["shift_mm"]) <= 1.5 * BULK_MM
    # without bulk motion wall, spine and ribs stay put: identical bone, zero field there
    still = simulate(8, 0, replace(ROI_CONFIG, size=64, slices=6, bulk_mm=0.0, z_subsamples=1))
    bone = np.isin(still.labels[FIXED_PHASE], (Tissue.CORTICAL, Tissue.CANCELLOUS))
    for phase in PHASES:
        assert np.all(still.patient.displacement[phase][:, ~still.cavity] == 0), phase
        assert np.array_equal(still.labels[phase][bone], still.labels[FIXED_PHASE][bone])


def test_kidneys_move_less_than_the_liver(sim):
    patient = sim.patient
    # kidneys (retroperitoneal) move less than the liver
    art = patient.displacement["arterial"][..., 0]
    liver_dz = np.abs(art[sim.labels["arterial"] == Tissue.LIVER]).mean()
    kidney_dz = np.abs(art[sim.labels["arterial"] == Tissue.KIDNEY_CORTEX]).mean()
    assert 0.55 < kidney_dz / liver_dz < 0.9


def test_breath_hold_mismatch_has_a_substantial_inplane_part(sim):
    """In-plane liver motion is about half the cranio-caudal one (2D registration can act on it)."""
    for phase in ("precontrast", "arterial", "delayed"):
        field = sim.patient.displacement[phase][sim.labels[phase] == Tissue.LIVER]
        inplane = np.linalg.norm(field[:, 1:], axis=-1).mean()
        assert inplane > 0.4 * np.abs(field[:, 0]).mean(), phase
        assert inplane > 0.35 * DEFAULT_MOTION_MM, phase

def test_displacement_points_from_phase_to_portal(sim):
    """Where a phase's liver mask differs from portal's, p + d(p) lands on portal's answer."""
    patient = sim.patient
    spacing = np.array(patient.spacing)
    portal = patient.liver[FIXED_PHASE].astype(np.float32)
    for phase in ("precontrast", "arterial", "delayed"):
        moved = patient.liver[phase]
        idx = np.argwhere(moved != portal)
        assert len(idx) > 100, phase
        step = patient.displacement[phase][tuple(idx.T)] / spacing
        expected = moved[tuple(idx.T)]
        agree = {
            sign: np.mean(
                (map_coordinates(portal, (idx + sign * step).T, order=1) > 0.5) == expected
            )
            for sign in (1, -1)
        }
        # not 1.0: the portal mask is only known at 5 mm slice centres
        assert agree[1] > 0.6 and agree[-1] < 0.2, (phase, agree)


def test_jacobian_positive_even_at_large_motion(sim):
    for phase, disp in sim.patient.displacement.items():
        assert jacobian_determinant(disp, sim.patient.spacing).min() > 0.3, phase
    big = make_patient(1, 3, PhantomConfig(size=96, slices=16, motion_mm=25.0, z_subsamples=1))
    for phase, disp in big.displacement.items():
        assert jacobian_determinant(disp, big.spacing).min() > 0.0, phase


def _arterial_dice(motion_mm: float, patients: int = 5) -> float:
    config = PhantomConfig(size=96, slices=40, motion_mm=motion_mm, z_subsamples=1)
    values = [
        mean_nonzero(liver_dice(make_patient(i, 7, config))["arterial"]) for i in range(patients)
    ]
    return float(np.mean(values))


def test_default_motion_gives_paper_liver_dice():
    default = _arterial_dice(DEFAULT_MOTION_MM)
    assert 0.86 <= default <= 0.93
    assert _arterial_dice(0.4 * DEFAULT_MOTION_MM) > default + 0.02


def test_boxes_match_mask_extent(sim):
    lesion = sim.patient.lesion
    z = int(np.argmax(lesion.sum(axis=(1, 2))))
    ys, xs = np.nonzero(lesion[z])
    raw = mask_to_boxes(lesion[z], smooth=False)
    assert raw.tolist() == [[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]]
    smooth = mask_to_boxes(lesion[z])
    assert len(smooth) == 1 and np.abs(smooth - raw).max() <= 2


def test_lesion_sizes_follow_the_paper():
    rng = np.random.default_rng(0)
    sizes = np.array([draw_diameter_mm(rng) for _ in range(4000)]) / 10
    assert sizes.min() >= 1.0 and sizes.max() <= 16.0
    assert 4.1 <= sizes.mean() <= 4.5 and 2.3 <= sizes.std() <= 3.1  # paper: 4.3 +- 2.7 cm
    small = make_patient(2, 0, PhantomConfig(size=64, slices=6, z_subsamples=1))
    assert small.lesion.any(), "the lesion must be inside a thin slab"
    assert len(mask_to_boxes(small.lesion[int(np.argmax(small.lesion.sum(axis=(1, 2))))])) >= 1


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_seed_identical_bytes_whatever_the_workers(tmp_path):
    config = PhantomConfig(size=48, slices=4, z_subsamples=1)
    one = synthesize(tmp_path / "a" / "ph", 3, 5, config, workers=1, progress=False)
    two = synthesize(tmp_path / "b" / "ph", 3, 5, config, workers=2, progress=False)
    assert one.patient_ids == two.patient_ids == ["phantom0000", "phantom0001", "phantom0002"]
    digest = _digest(one.root)
    assert digest == _digest(two.root)
    other = synthesize(tmp_path / "c", 3, 6, config, progress=False)
    assert (
        _digest(other.root)["patients/phantom0000/portal.nii.gz"]
        != digest["patients/phantom0000/portal.nii.gz"]
    )
    loaded = one.load("phantom0001", displacement=True)
    assert loaded.phases["arterial"].shape == (4, 48, 48) and set(loaded.displacement) == set(
        PHASES
    )


def test_split_proportions_are_a_cohort_parameter(tmp_path):
    from benchmark.commands.data_synth import _splits
    from benchmark.runner import default_cohort_dir

    config = PhantomConfig(size=48, slices=4, z_subsamples=1)
    cohort = synthesize(tmp_path / "s", 6, 1, config, progress=False, splits=(2, 1, 3))
    assert [len(cohort.split_ids(s)) for s in ("train", "val", "test")] == [2, 1, 3]
    assert cohort.manifest["params"]["splits"] == [2, 1, 3]
    paper = synthesize(tmp_path / "p", 3, 1, config, progress=False)
    assert "splits" not in paper.manifest["params"]  # cohorts made before the option resume
    with pytest.raises(ValueError, match="splits must be three whole numbers"):
        synthesize(tmp_path / "x", 3, 1, config, progress=False, splits=(2, 1, 0))
    assert _splits("10,4,6") == (10, 4, 6)
    phantom = {"patients": 6, "size": 48, "slices": 4, "seed": 1, "motion_mm": None}
    assert default_cohort_dir({"phantom": {**phantom, "splits": [2, 1, 3]}}).name.endswith(
        "-split2-1-3"
    )
    assert default_cohort_dir({"phantom": {**phantom, "splits": [216, 54, 10]}}).name == (
        "synthetic-6p-48px-4z-seed1"
    )
