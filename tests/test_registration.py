"""Registration stage: backends, variant writer, log, resume, Table II on a tiny phantom."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_registration import FakeBackend, fake_cohort
from registration_phantom import make_cohort, make_patient
from scipy import ndimage

from benchmark.analysis.published import published_liver_dice
from benchmark.cli import main
from benchmark.cohort import CohortError, CohortWriter, open_variant, variant_dir
from benchmark.phantom import PhantomConfig, synthesize
from registration import PAPER_VARIANTS as VARIANTS
from registration import alignment_table, register_variant
from registration.backends import (
    ElastixError,
    get_backend,
    set_threads,
)
from registration.metrics import MOVING_PHASES, residual_displacement, touched_slices
from registration.presets import parameter_maps
from registration.stage import LOG_COLUMNS, read_log, register_patient
from registration.transforms import load_transforms
from registration.variants import Variant

SIZE = 96
# elastix's default B-spline grid is 10 mm: below ~2 mm pixels it has too few samples per
# control point and slides tissue about (see docs/registration.md), so the order test uses 192 px
ORDER_SIZE = 192


@pytest.fixture(scope="module")
def itk_backend():
    set_threads(1)
    return get_backend("itk-elastix")


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Path:
    """One patient, two lesion slices, registered once with every method (real elastix).

    The test phantom at 192 px: the project phantom needs its full 512 px for elastix's
    default B-spline (10 mm grid) to beat affine (:func:`project_phantom`).
    """
    root = tmp_path_factory.mktemp("reg") / "cohort"
    patient = make_patient(
        "a", 1, size=ORDER_SIZE, slices=2, lesion_slices=(0,), lesion_phase="arterial"
    )
    make_cohort(root, [patient])
    for variant in VARIANTS:
        register_variant(root, variant, progress=False)
    return root


def test_touched_slices_are_lesion_slices_and_neighbours():
    lesion = np.zeros((8, 4, 4), np.uint8)
    lesion[[0, 4], 1, 1] = 1
    assert touched_slices(lesion).tolist() == [0, 1, 3, 4, 5]


def test_residual_of_a_perfect_translation_is_zero():
    true = np.zeros((20, 24, 3), np.float32)
    true[..., 1:] = (3.0, -4.5)
    undo = np.broadcast_to(np.float32([-3.0, 4.5]), (20, 24, 2))
    assert np.abs(residual_displacement(true, undo, (1.5, 1.5))).max() < 1e-5
    moved = residual_displacement(true, np.zeros((20, 24, 2), np.float32), (1.5, 1.5))
    np.testing.assert_allclose(moved, true)


@pytest.mark.parametrize("method", ["rigid", "affine"])
def test_identity_changes_nothing(itk_backend, method):
    image = make_patient("i", 3, size=SIZE, slices=1, lesion_slices=()).phases["portal"][0]
    reg = itk_backend.register(image, image, (4.0, 4.0), method)
    body = image > -500
    assert np.abs(itk_backend.displacement(reg)).max() < 0.4  # mm: 0.1 pixel
    assert np.abs(reg.warped - image)[body].mean() < 3.0  # HU: sub-pixel resampling of noise


def test_nonrigid_from_saved_affine_is_bit_identical(itk_backend):
    patient = make_patient("n", 6, size=SIZE, slices=1, lesion_slices=())
    fixed, moving = patient.phases["portal"][0], patient.phases["arterial"][0]
    whole = itk_backend.register(fixed, moving, (4.0, 4.0), "nonrigid")
    affine = itk_backend.transform_maps(itk_backend.register(fixed, moving, (4.0, 4.0), "affine"))
    saved = json.loads(json.dumps(affine))  # as stored in the variant's transforms file
    bspline = parameter_maps(Variant("nonrigid"))[1:]
    resumed = itk_backend.register(fixed, moving, (4.0, 4.0), bspline, initial=saved)
    np.testing.assert_array_equal(resumed.warped, whole.warped)
    assert itk_backend.transform_maps(resumed) == itk_backend.transform_maps(whole)
    np.testing.assert_array_equal(itk_backend.displacement(resumed),
                                  itk_backend.displacement(whole))
    for maps in ("rigid", "nonrigid"):  # an affine transform starts the B-spline map only
        with pytest.raises(ValueError, match="initial transform"):
            itk_backend.register(fixed, moving, (4.0, 4.0), maps, initial=saved)


def test_nonrigid_reuses_affine_only_for_the_same_images(tmp_path):
    fake_cohort(tmp_path / "c", n=1)
    register_variant(tmp_path / "c", "affine", backend=FakeBackend(reuses_affine=True),
                     progress=False)
    affine = load_transforms(variant_dir(tmp_path / "c", "affine"), "p0")
    backend = FakeBackend(reuses_affine=True)
    register_variant(tmp_path / "c", "nonrigid", backend=backend, progress=False)
    assert backend.initial == [affine[key] for key in sorted(affine, key=_log_order)]
    log = read_log(tmp_path / "c", "nonrigid")
    assert "failed" not in set(log["status"]) and "registered" in set(log["status"])
    assert log.query("status == 'registered'")["initial"].eq("affine").all()
    # a backend that cannot start from them: the whole sequence runs
    backend = FakeBackend()
    shutil.rmtree(variant_dir(tmp_path / "c", "nonrigid"))
    register_variant(tmp_path / "c", "nonrigid", backend=backend, progress=False)
    assert backend.initial == [None] * len(affine)
    # other images than the affine variant was made from (a regenerated cohort): the same
    patient = open_variant(tmp_path / "c", "unregistered").load("p0", liver=True)
    patient.phases["arterial"] += 1.0
    shutil.rmtree(tmp_path / "c" / "patients" / "p0")  # writers never replace a patient folder
    CohortWriter(tmp_path / "c", name="regtest", kind="synthetic",
                 params={"ids": ["p0"]}).write_patient(patient)
    backend = FakeBackend(reuses_affine=True)
    shutil.rmtree(variant_dir(tmp_path / "c", "nonrigid"))
    register_variant(tmp_path / "c", "nonrigid", backend=backend, progress=False)
    assert backend.initial == [None] * len(affine)


def _log_order(key: tuple[int, str]) -> tuple[int, int]:
    return key[0], MOVING_PHASES.index(key[1])


def test_known_translation_recovered_within_one_pixel(itk_backend):
    image = make_patient("t", 4, size=SIZE, slices=1, lesion_slices=()).phases["portal"][0]
    shift = np.array([3.4, -2.2])  # pixels (y, x): moving(p) = fixed(p - shift)
    moving = ndimage.shift(image, shift, order=1, mode="nearest")
    reg = itk_backend.register(image, moving, (4.0, 4.0), "rigid")
    error_px = np.linalg.norm(itk_backend.displacement(reg) / 4.0 - shift, axis=-1)
    assert error_px[image > -500].max() < 1.0


def test_variants_are_complete_cohorts_with_binary_masks(registered):
    source = open_variant(registered, "unregistered").load("a", displacement=True)
    for variant in VARIANTS:
        cohort = open_variant(registered, variant)
        assert cohort.variant == variant
        patient = cohort.load("a", displacement=True)
        for mask in [patient.lesion, *patient.liver.values()]:
            assert set(np.unique(mask)) <= {0, 1}
        assert patient.lesion.any()
        assert not np.array_equal(patient.phases["arterial"], source.phases["arterial"])
        np.testing.assert_array_equal(patient.phases["portal"], source.phases["portal"])
        assert set(patient.displacement) == set(source.displacement)
        log = read_log(registered, variant)
        assert tuple(log.columns) == LOG_COLUMNS
        assert (log["status"] == "registered").sum() == 6  # 2 slices x 3 moving phases
        assert (log["seconds"] > 0).all()
        assert (log["ncc_after"] > log["ncc_before"]).mean() > 0.5
        warped = log[log["lesion_px_before"].notna()]
        assert set(warped["phase"]) == {"arterial"} and len(warped) == 2
        drawn = warped["lesion_px_before"] > 0
        assert drawn.any() and (warped.loc[drawn, "lesion_px_after"] > 0).all()
        assert (warped.loc[~drawn, "lesion_px_after"] == 0).all()
        registered_rows = log[log["status"] == "registered"]
        reused = registered_rows["initial"].eq("affine")
        assert reused.all() if variant == "nonrigid" else not reused.any()
        maps = load_transforms(variant_dir(registered, variant), "a")
        assert set(maps) == set(zip(registered_rows["slice"], registered_rows["phase"],
                                    strict=True))
        assert len(maps[(0, "arterial")]) == (2 if variant == "nonrigid" else 1)


def test_table2_order_on_synthetic_cohort(registered):
    table = alignment_table(registered, published=published_liver_dice()).set_index("variant")
    dice, residual = table["liver_dice"], table["residual_mm"]
    # rigid vs affine: equal within 0.005 Dice / 1 mm on one tiny patient (paper: 0.912, 0.921)
    assert dice["unregistered"] < dice["rigid"] <= dice["affine"] + 0.005
    assert max(dice["rigid"], dice["affine"]) < dice["nonrigid"]
    assert dice["nonrigid"] > 0.93
    assert residual["unregistered"] > max(residual["rigid"], residual["affine"])
    assert residual["affine"] <= residual["rigid"] + 1.0
    assert min(residual["rigid"], residual["affine"]) > residual["nonrigid"]
    assert table.loc["nonrigid", "liver_dice_published"] == pytest.approx(0.9622)
    written = pd.read_csv(registered / "variants" / "table2.csv")
    assert list(written["variant"]) == ["unregistered", *VARIANTS]
    assert {"variant", "liver_dice", "liver_dice_published", "ncc", "residual_mm", "slices"} <= set(
        written.columns
    )
    assert (registered / "variants" / "table2.md").read_text().startswith("| variant |")


@pytest.fixture(scope="module")
def project_phantom(tmp_path_factory) -> Path:
    """``benchmark.phantom`` at its defaults (512 px, breathing + table shift), 2 patients of 3
    slices, registered with every method (about a minute)."""
    root = tmp_path_factory.mktemp("project") / "cohort"
    synthesize(root, 2, 0, PhantomConfig(slices=3, z_subsamples=1), progress=False)
    for variant in VARIANTS:
        register_variant(root, variant, progress=False)
    return root


def test_table2_order_on_the_project_phantom(project_phantom):
    # the order on the default phantom; docs/registration.md has the 8-patient table
    table = alignment_table(project_phantom).set_index("variant")
    for variant in VARIANTS:
        status = set(read_log(project_phantom, variant)["status"])
        assert "failed" not in status and "registered" in status
    dice = table["liver_dice"]
    assert dice["unregistered"] + 0.02 < dice["rigid"] <= dice["affine"] + 0.001
    assert dice["affine"] < dice["nonrigid"]
    assert dice["nonrigid"] > 0.93
    for residual in (table["residual_mm"], table["residual_inplane_mm"]):
        assert residual["unregistered"] > residual["rigid"] + 1.0
        assert residual["affine"] <= residual["rigid"] + 0.05
        assert residual["affine"] > residual["nonrigid"]


def test_cli_prints_table_and_timing(registered, capsys):
    assert main(["register", "--cohort", str(registered), "--variant", "all", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "| nonrigid |" in out and "s/slice" in out


def test_progress_is_reported_per_touched_slice():
    patient = make_patient("p", 0, size=48, slices=5, lesion_slices=(3,))
    patient.displacement = None  # the fake backend computes none
    ticks = []
    _, rows, _ = register_patient(
        patient, "rigid", FakeBackend(), on_slice=lambda: ticks.append(1)
    )
    assert len(ticks) == 3  # slices 2, 3, 4
    assert [r["slice"] for r in rows if r["status"] == "copied"] == [0, 0, 0, 1, 1, 1]
    assert [r["slice"] for r in rows if r["status"] == "registered"] == [2] * 3 + [3] * 3 + [4] * 3


class _Bar:
    def __init__(self):
        self.steps: list[int] = []

    def update(self, n: int) -> None:
        self.steps.append(n)

    def close(self) -> None:
        pass


def test_progress_moves_per_slice_with_worker_processes(tmp_path, monkeypatch):
    from shift_backend import ShiftBackend

    from registration import stage

    fake_cohort(tmp_path / "c", n=2)
    bar = _Bar()
    monkeypatch.setattr(stage, "_progress", lambda total, variant, enabled, unit: bar)
    with stage.WorkerPool(2, ShiftBackend(), threads=1) as pool:
        register_variant(tmp_path / "c", "rigid", backend=ShiftBackend(), pool=pool)
    assert bar.steps == [1] * 2 * 3  # 2 patients x 3 touched slices, each as it finishes
    assert set(read_log(tmp_path / "c", "rigid")["status"]) == {"registered"}


def test_failing_slice_is_logged_kept_and_flagged(tmp_path):
    fake_cohort(tmp_path / "c", n=1)
    source = open_variant(tmp_path / "c", "unregistered").load("p0")
    backend = FakeBackend(fail={1: "raise", 2: "nan"})
    register_variant(tmp_path / "c", "rigid", backend=backend, progress=False)
    log = read_log(tmp_path / "c", "rigid")
    failed = log[log["status"] == "failed"]
    assert len(failed) == 2 and failed["error"].str.contains("exploded").any()
    patient = open_variant(tmp_path / "c", "rigid").load("p0")
    assert len(patient.meta["registration"]["failed"]) == 2
    for z, phase in patient.meta["registration"]["failed"]:
        np.testing.assert_array_equal(patient.phases[phase][z], source.phases[phase][z])


def test_a_programming_error_is_not_a_failed_slice(tmp_path):
    fake_cohort(tmp_path / "c", n=1)
    with pytest.raises(TypeError, match="a programming error"):
        register_variant(tmp_path / "c", "rigid", backend=FakeBackend(fail={2: "bug"}),
                         progress=False)
    assert not (variant_dir(tmp_path / "c", "rigid") / "patients" / "p0").exists()


def test_elastix_failure_is_logged_per_slice(itk_backend):
    """Real elastix on a NaN moving slice: its RuntimeError becomes one failed slice."""
    patient = make_patient("e", 4, size=48, slices=3, lesion_slices=(1,))
    patient.phases["arterial"][1] = np.nan
    with pytest.raises(ElastixError, match="elastix"):
        itk_backend.register(patient.phases["portal"][1], patient.phases["arterial"][1],
                             (8.0, 8.0), "rigid")
    _, rows, _ = register_patient(patient, "rigid", itk_backend)
    status = {(r["slice"], r["phase"]): r["status"] for r in rows if r["status"] != "copied"}
    assert status.pop((1, "arterial")) == "failed"
    assert set(status.values()) == {"registered"} and len(status) == 3 * 3 - 1
    failed = next(r for r in rows if r["status"] == "failed")
    assert failed["error"].startswith("ElastixError: ") and "elastix" in failed["error"]


def test_table2_without_displacement_or_liver_masks(tmp_path):
    fake_cohort(tmp_path / "c", n=1)
    register_variant(tmp_path / "c", "rigid", backend=FakeBackend(), progress=False)
    table = alignment_table(tmp_path / "c").set_index("variant")
    assert list(table.index) == ["unregistered", "rigid"]  # affine, nonrigid not registered
    assert table["residual_mm"].isna().all() and table["liver_dice"].notna().all()
    bare = make_patient("q", 2, size=48, slices=3)
    bare.liver = bare.displacement = None
    make_cohort(tmp_path / "bare", [bare])
    row = alignment_table(tmp_path / "bare").iloc[0]
    assert np.isnan(row["liver_dice"]) and np.isfinite(row["ncc"]) and row["slices"] == 3


def test_rerun_resumes_after_interruption(tmp_path):
    fake_cohort(tmp_path / "c", n=2)
    per_patient = 3 * 3  # 3 touched slices x 3 moving phases
    with pytest.raises(KeyboardInterrupt):
        register_variant(
            tmp_path / "c",
            "affine",
            backend=FakeBackend(fail={per_patient + 1: "interrupt"}),
            progress=False,
        )
    out = tmp_path / "c" / "variants" / "affine"
    assert not (out / "cohort.json").exists()
    first = (out / "patients" / "p0" / "patient.json").stat().st_mtime_ns
    backend = FakeBackend()
    cohort = register_variant(tmp_path / "c", "affine", backend=backend, progress=False)
    assert backend.calls == per_patient
    assert cohort.patient_ids == ["p0", "p1"]
    assert (out / "patients" / "p0" / "patient.json").stat().st_mtime_ns == first
    assert len(read_log(tmp_path / "c", "affine")) == 2 * per_patient


def test_cli_names_the_bad_folder(tmp_path, capsys):
    assert main(["register", "--cohort", str(tmp_path), "--variant", "rigid"]) == 2
    assert f"{tmp_path}" in capsys.readouterr().err


def test_bad_input_is_refused(tmp_path):
    with pytest.raises(CohortError, match="not a cohort"):
        register_variant(tmp_path, "rigid", progress=False)
    fake_cohort(tmp_path / "c", n=1)
    with pytest.raises(ValueError, match="unknown variant"):
        register_variant(tmp_path / "c", "elastic", progress=False)
    with pytest.raises(ValueError, match="unknown registration backend"):
        register_variant(tmp_path / "c", "rigid", backend="ants", progress=False)


def test_resume_refuses_other_backend(tmp_path):
    fake_cohort(tmp_path / "c", n=1)
    register_variant(tmp_path / "c", "rigid", backend=FakeBackend(), progress=False)
    with pytest.raises(CohortError, match="other parameters"):
        register_variant(tmp_path / "c", "rigid", progress=False)
