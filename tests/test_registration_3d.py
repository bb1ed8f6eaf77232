"""3D registration, the fast preset, variant names and metadata, and keeping experiments apart."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fake_registration import FakeBackend, fake_cohort
from registration_phantom import SHIFT, shifted_patient

from benchmark.cli import main
from benchmark.cohort import CohortWriter, open_variant, variant_dir
from registration import alignment_table, register_variant
from registration.metrics import MOVING_PHASES, touched_slices
from registration.presets import FAST_OVERRIDES, describe, parameter_maps
from registration.stage import read_log, register_patient
from registration.transforms import load_transforms, load_volume_transforms
from registration.variants import (
    ALL_VARIANTS,
    PAPER_VARIANTS,
    Variant,
    family,
    parse_variant,
)
from registration.volume import residual_volume

DOCS = Path(__file__).resolve().parents[1] / "docs" / "registration.md"
@pytest.fixture(scope="module")
def shifted(tmp_path_factory) -> Path:
    """The shifted patient registered rigidly in 3D and, for comparison, in 2D (real elastix;
    about 30 s)."""
    root = tmp_path_factory.mktemp("shift3d") / "cohort"
    writer = CohortWriter(root, name="shift3d", kind="synthetic", params={"shift": SHIFT.tolist()})
    writer.write_patient(shifted_patient())
    writer.finish()
    for variant in ("rigid-3d", "rigid"):
        register_variant(root, variant, progress=False)
    return root


def test_3d_registration_undoes_a_known_3d_shift(shifted):
    table = alignment_table(shifted).set_index("variant")
    before, after, per_slice = (table.loc[v] for v in ("unregistered", "rigid-3d", "rigid"))
    known = float(np.linalg.norm(SHIFT * np.array([5.0, 380 / 64, 380 / 64])))
    assert before["residual_mm"] == pytest.approx(known, rel=1e-3)
    assert after["residual_mm"] < 1.0  # mm: a sixth of a voxel
    assert after["liver_dice"] > before["liver_dice"] + 0.2
    # per-slice 2D registration aligns in plane but cannot touch the 7 mm through the plane
    assert per_slice["residual_inplane_mm"] < 1.0
    assert per_slice["residual_mm"] > 5.0
    assert after["liver_dice"] > per_slice["liver_dice"]


def test_3d_variant_is_a_complete_cohort(shifted):
    source = open_variant(shifted, "unregistered").load("phantom0000", displacement=True)
    cohort = open_variant(shifted, "rigid-3d")
    assert cohort.variant == "rigid-3d"
    params = cohort.manifest["params"]
    assert (params["method"], params["dims"], params["preset"]) == ("rigid", 3, "default")
    patient = cohort.load("phantom0000", displacement=True)
    assert patient.meta["registration"]["dims"] == 3
    assert patient.meta["registration"]["failed"] == []
    for mask in [patient.lesion, *patient.liver.values()]:
        assert set(np.unique(mask)) <= {0, 1}
    np.testing.assert_array_equal(patient.phases["portal"], source.phases["portal"])
    # every slice moved, not only the ones the detector reads
    untouched = np.setdiff1d(np.arange(patient.shape[0]), touched_slices(source.lesion))
    assert not np.array_equal(patient.phases["arterial"][untouched],
                              source.phases["arterial"][untouched])
    log = read_log(shifted, "rigid-3d")
    assert list(log["phase"]) == list(MOVING_PHASES) and log["slice"].isna().all()
    assert (log["status"] == "registered").all() and (log["ncc_after"] > log["ncc_before"]).all()
    maps = load_volume_transforms(variant_dir(shifted, "rigid-3d"), "phantom0000")
    assert set(maps) == set(MOVING_PHASES)
    assert maps["arterial"][0]["Transform"] == ["EulerTransform"]
    assert maps["arterial"][0]["FixedImageDimension"] == ["3"]
    assert load_transforms(variant_dir(shifted, "rigid-3d"), "phantom0000") == {}


def test_residual_volume_of_a_perfect_shift_is_zero():
    true = np.zeros((4, 5, 6, 3), np.float32)
    true[...] = (5.0, -3.0, 2.0)
    np.testing.assert_allclose(residual_volume(true, -true, (5.0, 1.0, 1.0)), 0.0, atol=1e-6)
    np.testing.assert_allclose(residual_volume(true, np.zeros_like(true), (5.0, 1.0, 1.0)), true)
    with pytest.raises(ValueError, match="fields"):
        residual_volume(true, true[..., :2], (5.0, 1.0, 1.0))


def test_variant_names():
    assert PAPER_VARIANTS == ("rigid", "affine", "nonrigid")
    assert {"nonrigid-fast", "rigid-3d", "affine-3d", "nonrigid-3d"} <= set(ALL_VARIANTS)
    for name in ALL_VARIANTS:
        assert parse_variant(name).name == name
    assert parse_variant("nonrigid-3d") == Variant("nonrigid", 3)
    assert [v.name for v in family(2, "fast")] == ["rigid-fast", "affine-fast", "nonrigid-fast"]
    with pytest.raises(ValueError, match="unknown variant"):
        parse_variant("nonrigid-4d")
    with pytest.raises(ValueError, match="2D registration only"):
        Variant("nonrigid", 3, "fast")


def test_variant_folder_records_dims_and_preset(tmp_path):
    fake_cohort(tmp_path / "c", n=1)
    for name in ("nonrigid-fast", "affine-3d"):
        variant = parse_variant(name)
        backend = FakeBackend()
        register_variant(tmp_path / "c", name, backend=backend, progress=False)
        cohort = open_variant(tmp_path / "c", name)
        params = cohort.manifest["params"]
        assert cohort.variant == name
        assert (params["method"], params["dims"], params["preset"]) == (
            variant.method, variant.dims, variant.preset)
        assert params["parameter_maps"] == describe(variant)
        meta = cohort.load("p0").meta["registration"]
        assert (meta["variant"], meta["dims"], meta["preset"]) == (
            name, variant.dims, variant.preset)
        assert all(maps == parameter_maps(variant) for maps in backend.maps)
        # every registration was handed the variant's maps: 3 phases, per slice in 2D
        assert backend.calls == (3 if variant.dims == 3 else 3 * 3)


def test_3d_bookkeeping_failures_and_affine_reuse(tmp_path):
    fake_cohort(tmp_path / "c", n=1)
    backend = FakeBackend(fail={2: "raise"}, reuses_affine=True)
    register_variant(tmp_path / "c", "affine-3d", backend=backend, progress=False)
    log = read_log(tmp_path / "c", "affine-3d")
    assert list(log["status"]) == ["registered", "failed", "registered"]
    assert "exploded" in log.loc[1, "error"]
    patient = open_variant(tmp_path / "c", "affine-3d").load("p0")
    source = open_variant(tmp_path / "c", "unregistered").load("p0")
    assert patient.meta["registration"]["failed"] == [[None, MOVING_PHASES[1]]]
    np.testing.assert_array_equal(patient.phases[MOVING_PHASES[1]],
                                  source.phases[MOVING_PHASES[1]])
    saved = load_volume_transforms(variant_dir(tmp_path / "c", "affine-3d"), "p0")
    assert set(saved) == {MOVING_PHASES[0], MOVING_PHASES[2]}
    # nonrigid-3d starts from the saved affine-3d volumes with the B-spline map only
    backend = FakeBackend(reuses_affine=True)
    register_variant(tmp_path / "c", "nonrigid-3d", backend=backend, progress=False)
    assert backend.initial == [saved.get(phase) for phase in MOVING_PHASES]
    bspline = parameter_maps(Variant("nonrigid", 3))
    assert backend.maps == [bspline[1:], bspline, bspline[1:]]
    assert list(read_log(tmp_path / "c", "nonrigid-3d")["initial"].fillna("")) == [
        "affine", "", "affine"]
    # the 2D nonrigid variant does not reuse 3D transforms
    backend = FakeBackend(reuses_affine=True)
    register_variant(tmp_path / "c", "nonrigid", backend=backend, progress=False)
    assert backend.initial == [None] * backend.calls


def test_3d_progress_is_reported_per_phase():
    from registration_phantom import make_patient as small_patient

    ticks = []
    patient = small_patient("p", 0, size=48, slices=5)
    patient.displacement = None
    out = register_patient(patient, "rigid-3d", FakeBackend(), on_slice=lambda: ticks.append(1))
    assert len(ticks) == len(MOVING_PHASES) == len(out.rows)


def test_fast_preset_maps_are_the_documented_ones():
    """docs/registration.md's table of the fast preset is FAST_OVERRIDES, and nothing else."""
    text = DOCS.read_text()
    section = text.split("<!-- fast preset maps -->")[1].split("<!-- end -->")[0]
    documented: dict[str, dict[str, tuple[str, ...]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            values = tuple(re.findall(r"`([^`]*)`", cells[2]))
            documented.setdefault(cells[0].strip("`"), {})[cells[1].strip("`")] = values
    actual = {base: dict(over) for base, over in FAST_OVERRIDES.items() if over}
    assert documented == actual
    for variant in family(2, "fast"):
        for pmap in parameter_maps(variant):
            assert {k: pmap.overrides[k] for k in FAST_OVERRIDES[pmap.base]} == dict(
                FAST_OVERRIDES[pmap.base])


def test_the_itk_backend_runs_the_preset_maps():
    from registration.backends import get_backend, set_threads

    set_threads(1)
    backend = get_backend("itk-elastix")
    default = backend.elastix_maps("nonrigid")
    fast = backend.elastix_maps(parameter_maps(Variant("nonrigid", preset="fast")))
    assert [m["Transform"] for m in fast] == [["AffineTransform"], ["BSplineTransform"]]
    for got, spec in zip(fast, parameter_maps(Variant("nonrigid", preset="fast")), strict=True):
        for key, values in spec.overrides.items():
            assert got[key] == list(values)
    # the default preset is elastix's map as itk-elastix writes it
    reference = backend.itk.ParameterObject.New().GetDefaultParameterMap("bspline")
    assert {k: list(v) for k, v in reference.items() if k != "DefaultPixelValue"} == {
        k: v for k, v in default[1].items() if k != "DefaultPixelValue"}


def test_cli_registers_3d_and_fast_variants_apart(tmp_path, monkeypatch, capsys):
    fake_cohort(tmp_path / "c", n=1)
    import registration.stage as stage

    monkeypatch.setattr(stage, "get_backend", lambda name: FakeBackend())
    monkeypatch.setattr(stage, "check_backend", lambda name: None)
    monkeypatch.setattr(stage, "set_threads", lambda n, backend="itk-elastix": None)
    for extra in (["--dims", "3"], ["--preset", "fast"]):
        assert main(["register", "--cohort", str(tmp_path / "c"), "--variant", "rigid",
                     "--no-progress", *extra]) == 0
    out = capsys.readouterr().out
    assert "| rigid-3d |" in out and "| rigid-fast |" in out
    assert "1 patients" in out  # the 3D timing line counts patient volumes
    assert not (variant_dir(tmp_path / "c", "rigid") / "cohort.json").exists()
    assert main(["register", "--cohort", str(tmp_path / "c"), "--variant", "rigid",
                 "--dims", "3", "--preset", "fast"]) == 2
    assert "2D registration only" in capsys.readouterr().err


def test_runner_and_analysis_keep_3d_apart(tmp_path):
    from benchmark import run_folder, runner
    from benchmark.analysis.runs import collect_runs

    assert runner.check_variant("nonrigid-3d") == "nonrigid-3d"
    base = {"runs": str(tmp_path), "cohort_name": "c", "model": "gssd", "seed": 1}
    assert run_folder.unit_dir({**base, "variant": "nonrigid-3d"}) != run_folder.unit_dir(
        {**base, "variant": "nonrigid"})
    (tmp_path / "c" / "nonrigid-3d" / "gssd" / "seed1").mkdir(parents=True)
    found = collect_runs(tmp_path)
    assert found.runs == []
    assert any("outside the paper's protocol" in p for p in found.problems)
