"""The robustness ladder: levels, phantom levels, deformations of real cohorts, the command and
its negative control."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tiny_detector  # noqa: F401  (registers the test-only model ``tiny_test``)
from scipy.ndimage import map_coordinates
from tiny_cohort import make_cohort

from benchmark import FIXED_PHASE, PHASES
from benchmark.cli import main
from benchmark.cohort import Cohort, CohortWriter, Patient
from benchmark.dataset import LesionSliceDataset
from benchmark.phantom import PhantomConfig
from benchmark.phantom.synth import simulate
from benchmark.robustness.analysis import analyse_ladder
from benchmark.robustness.deformation import MOVING_PHASES, compose, deform_cohort
from benchmark.robustness.levels import level_cohort_dir, parse_levels, phantom_level_config
from benchmark.robustness.misalignment import cohort_misalignment

SMALL = ["--set", "eval.bootstrap=50"]


# ----------------------------------------------------------------------------- levels


def test_parse_levels():
    assert parse_levels("8, 0,2,2,4") == [0.0, 2.0, 4.0, 8.0]
    for bad, message in (
        ("0,x", "'x' is not a number"),
        ("0,-1", ">= 0"),
        ("3", "two levels"),
        ("0,nan", ">= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_levels(bad)


def test_phantom_levels_differ_only_in_motion():
    """Same seed and index at three levels: portal, labels and lesion bit-identical; only the
    non-portal phases and their fields change, and level 0 has no motion at all."""
    section = {"size": 128, "slices": 6}
    sims = {level: simulate(3, 7, phantom_level_config(section, level)) for level in (0, 4, 12)}
    still = sims[0].patient
    for level, sim in sims.items():
        p = sim.patient
        assert p.lesion_phase == FIXED_PHASE
        np.testing.assert_array_equal(p.phases[FIXED_PHASE], still.phases[FIXED_PHASE])
        np.testing.assert_array_equal(p.liver[FIXED_PHASE], still.liver[FIXED_PHASE])
        np.testing.assert_array_equal(p.lesion, still.lesion)
        np.testing.assert_array_equal(sim.labels[FIXED_PHASE], sims[0].labels[FIXED_PHASE])
        for key in ("lesion_center_mm", "lesion_diameter_cm", "lesion_pattern", "noise_sd_hu"):
            assert p.meta[key] == still.meta[key], key
        for phase in MOVING_PHASES:
            moving = np.abs(p.displacement[phase]).max()
            assert (moving == 0) == (level == 0), (level, phase)
    assert still.lesion.any()
    for phase in MOVING_PHASES:
        assert not np.array_equal(sims[12].patient.phases[phase], still.phases[phase])
        # no motion: the phase shows the anatomy exactly where portal does
        np.testing.assert_array_equal(sims[0].labels[phase], sims[0].labels[FIXED_PHASE])


def test_stored_lesion_phase_changes_no_other_draw():
    drawn = simulate(1, 5, PhantomConfig(size=128, slices=6)).patient
    fixed = simulate(1, 5, PhantomConfig(size=128, slices=6, lesion_phase=FIXED_PHASE)).patient
    for phase in PHASES:
        np.testing.assert_array_equal(drawn.phases[phase], fixed.phases[phase])
        np.testing.assert_array_equal(drawn.displacement[phase], fixed.displacement[phase])
    assert fixed.lesion_phase == FIXED_PHASE
    assert (
        PhantomConfig().params()
        == {k: v for k, v in PhantomConfig(lesion_phase=None).params().items()}
        and "lesion_phase" not in PhantomConfig().params()
    )
    with pytest.raises(ValueError, match="lesion_phase"):
        PhantomConfig(lesion_phase="venous")


# ----------------------------------------------------------------------------- deformation


def _with_liver(root, patients=3, size=64, slices=6):
    """A tiny cohort whose patients carry a liver mask (a large disc) on every phase."""
    source = make_cohort(root / "plain", patients=patients, size=size, slices=slices)
    writer = CohortWriter(root / "cohort", name="tinyliver", kind="test", params={"n": patients})
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (0.35 * size) ** 2).astype(np.uint8)
    for p in source:
        p.liver = {phase: np.repeat(disc[None], slices, 0) for phase in PHASES}
        writer.write_patient(p)
    return writer.finish()


def test_deformation_moves_phases_and_liver_masks_and_stores_the_field(tmp_path):
    source = _with_liver(tmp_path)
    still = deform_cohort(source, tmp_path / "d0", "d0", 0.0, seed=1)
    moved = deform_cohort(source, tmp_path / "d3", "d3", 3.0, seed=1)
    for pid in source.patient_ids:
        old = source.load(pid)
        zero = still.load(pid, displacement=True)
        new = moved.load(pid, displacement=True)
        for phase in PHASES:  # level 0 copies the data unchanged, with zero fields
            np.testing.assert_array_equal(zero.phases[phase], old.phases[phase])
            assert not zero.displacement[phase].any()
        np.testing.assert_array_equal(new.phases[FIXED_PHASE], old.phases[FIXED_PHASE])
        np.testing.assert_array_equal(new.lesion, old.lesion)
        assert new.lesion_phase == FIXED_PHASE
        assert new.meta["deformation"]["lesion_phase_drawn"] == old.lesion_phase
        assert not new.displacement[FIXED_PHASE].any()
        for phase in MOVING_PHASES:
            field = new.displacement[phase]
            # the stored field: mean length over the portal liver = the level
            length = np.linalg.norm(field[old.liver[FIXED_PHASE] > 0], axis=-1).mean()
            assert length == pytest.approx(3.0, rel=0.01)
            # the phase and its liver mask show at p what the source showed at p + d(p)
            coords = (
                np.indices(field.shape[:3])
                + np.moveaxis(field, -1, 0) / np.array(old.spacing)[:, None, None, None]
            )
            hu = map_coordinates(old.phases[phase], coords, order=1, mode="nearest")
            assert np.abs(new.phases[phase] - hu).max() <= 0.5 + 1e-3  # int16 storage
            liver = map_coordinates(old.liver[phase], coords, order=0, mode="nearest")
            assert (new.liver[phase] == liver).mean() > 0.995
            assert not np.array_equal(new.liver[phase], old.liver[phase])
    measured = cohort_misalignment(moved)
    assert set(measured["region"]) == {"liver"} and len(measured) == 3 * len(MOVING_PHASES)
    assert measured["mm"].to_numpy() == pytest.approx(3.0, rel=0.15)
    assert cohort_misalignment(still)["mm"].eq(0).all()
    with pytest.raises(ValueError, match="would fold"):
        deform_cohort(source, tmp_path / "huge", "huge", 60.0, seed=1)


def test_deformation_composes_with_a_stored_residual(tmp_path):
    """A source that stores its own true field (a registered phantom): the new field is
    u(p) + r(p + u(p)); for a constant residual r that is u + r."""
    plain = make_cohort(tmp_path / "plain", patients=3, size=32, slices=5)
    writer = CohortWriter(tmp_path / "src", name="src", kind="test", params={})
    residual = np.zeros((5, 32, 32, 3), np.float32)
    residual[..., 1] = 1.5
    for p in plain:
        p.displacement = {phase: residual.copy() for phase in PHASES}
        writer.write_patient(p)
    source = writer.finish()
    out = deform_cohort(source, tmp_path / "out", "out", 2.0, seed=3)
    ref = deform_cohort(plain, tmp_path / "ref", "ref", 2.0, seed=3)
    for pid in source.patient_ids:
        u = ref.load(pid, displacement=True).displacement
        d = out.load(pid, displacement=True).displacement
        for phase in MOVING_PHASES:
            np.testing.assert_allclose(d[phase], u[phase] + residual, atol=1e-5)
            np.testing.assert_allclose(
                compose(u[phase], residual, (2.0, 1.0, 1.0)), u[phase] + residual, atol=1e-5
            )


@pytest.mark.realdata
def test_deformation_of_a_real_ct(real_ct, tmp_path):
    """The TotalSegmentator example as four aligned phases: after a 5 mm deformation each
    moving phase shows at p the portal anatomy at p + d(p), and its liver mask moved."""
    from benchmark.importer.build import place_mask
    from benchmark.importer.resample import grid_affine, to_lps_grid
    from benchmark.importer.volumes import read_mask, read_volume
    from registration.metrics import dice

    folder = real_ct / "totalsegmentator-example"
    hu, spacing, origin = to_lps_grid(read_volume(folder / "example_ct.nii.gz"))
    liver = place_mask(
        read_mask(folder / "example_ct_liver.nii.gz"), hu.shape, grid_affine(spacing, origin), []
    )
    z = slice(64, None)  # the liver's slices (70-111) and a margin: keeps the test fast
    hu, liver = hu[z], liver[z]
    origin = (origin[0] + 64 * spacing[0], *origin[1:])
    writer = CohortWriter(tmp_path / "real", name="real", kind="imported", params={})
    writer.write_patient(
        Patient(
            "r0",
            {p: hu.astype(np.float32) for p in PHASES},
            liver,
            FIXED_PHASE,
            spacing,
            origin,
            split="test",
            liver={p: liver for p in PHASES},
        )
    )
    source = writer.finish()
    out = deform_cohort(source, tmp_path / "deformed", "deformed", 5.0, seed=0)
    patient = out.load("r0", displacement=True)
    portal = patient.phases[FIXED_PHASE]
    for phase in MOVING_PHASES:
        field = patient.displacement[phase]
        coords = (
            np.indices(field.shape[:3])
            + np.moveaxis(field, -1, 0) / np.array(spacing)[:, None, None, None]
        )
        expected = map_coordinates(portal, coords, order=1, mode="nearest")
        inside = patient.liver[phase] > 0
        assert np.abs(patient.phases[phase] - expected)[inside].max() <= 0.5 + 1e-3
        assert 0.6 < dice(patient.liver[phase], liver) < 0.99
    mm = cohort_misalignment(out)["mm"]
    assert mm.to_numpy() == pytest.approx(5.0, rel=0.1)


# ----------------------------------------------------------------------------- analysis


def _units(root, tables):
    rows = []
    for (model, level, seed), frame in tables.items():
        path = root / f"{model}-{level}-{seed}"
        path.mkdir(parents=True)
        frame.to_csv(path / "predictions_test.csv", index=False)
        rows.append((model, level, seed, str(path)))
    return pd.DataFrame(rows, columns=["model", "level", "seed", "path"])


def _predictions(hit: dict[str, bool]) -> pd.DataFrame:
    rows = []
    for patient, found in hit.items():
        rows.append((patient, 1, "gt", 10, 10, 20, 20, np.nan))
        box = (10, 10, 20, 20) if found else (40, 40, 50, 50)
        rows.append((patient, 1, "det", *box, 0.9))
    return pd.DataFrame(rows, columns=["patient", "slice", "kind", "x0", "y0", "x1", "y1", "score"])


def test_ladder_summary_pairs_patients_across_levels(tmp_path):
    every = {f"p{i}": True for i in range(6)}
    half = {f"p{i}": i < 3 for i in range(6)}
    units = _units(
        tmp_path,
        {
            ("a", 0.0, 1): _predictions(every),
            ("a", 4.0, 1): _predictions(half),
            ("a", 8.0, 1): _predictions(half),
            ("b", 0.0, 1): _predictions(every),
            ("b", 4.0, 1): _predictions(every),
            ("b", 8.0, 1): _predictions(every),
        },
    )
    result = analyse_ladder(units, {0.0: 0.0, 4.0: 5.0, 8.0: 10.0}, n_boot=200, seed=0)
    summary = result.summary.set_index("model")
    assert summary.loc["a", "ap0"] == 1.0 and summary.loc["b", "rpc"] == 1.0
    assert summary.loc["a", "mpc"] == pytest.approx(summary.loc["a", "rpc"])
    assert 0.2 < summary.loc["a", "rpc"] < 0.8 and summary.loc["a", "rpc_high"] < 1.0
    # the AP lost at the largest level, paired: level 0 finds every lesion, level 8 half
    assert summary.loc["a", "drop"] == pytest.approx(0.5) and summary.loc["a", "drop_low"] > 0
    assert summary.loc["b", "drop"] == summary.loc["b", "drop_high"] == 0.0
    assert (
        summary.loc["b", "identical_predictions"] and not summary.loc["a", "identical_predictions"]
    )
    # model against model, paired: a loses half its AP, b nothing
    pair = result.pairs.set_index(["model", "other"]).loc[("a", "b")]
    assert pair["drop_diff"] == pytest.approx(0.5) and pair["drop_diff_low"] > 0
    assert pair["rpc_diff"] == pytest.approx(summary.loc["a", "rpc"] - 1.0)
    assert pair["rpc_diff_high"] < 0
    levels = result.levels.set_index(["model", "level_mm"])
    assert levels.loc[("a", 8.0), "misalignment_mm"] == 10.0
    assert result.facts["patients"] == 6 and result.facts["lesion_boxes"] == [6]
    wrong = _units(
        tmp_path / "w",
        {
            ("a", 0.0, 1): _predictions(every),
            ("a", 4.0, 1): _predictions({"p0": True, "p1": True}),
        },
    )
    with pytest.raises(ValueError, match="different patients"):
        analyse_ladder(wrong, {}, n_boot=10)


def test_rpc_is_undefined_when_level_zero_finds_nothing(tmp_path):
    none = {f"p{i}": False for i in range(4)}
    units = _units(tmp_path, {("a", 0.0, 1): _predictions(none), ("a", 2.0, 1): _predictions(none)})
    summary = analyse_ladder(units, {}, n_boot=20).summary.iloc[0]
    assert summary["ap0"] == 0.0 and np.isnan(summary["rpc"]) and np.isnan(summary["rpc_low"])


# ----------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def phantom_ladder(tmp_path_factory):
    """The smoke-sized command: two levels, a portal-only and a multiphase model."""
    root = tmp_path_factory.mktemp("ladder")
    args = [
        "robustness",
        "--motion-mm",
        "0,8",
        "--models",
        "gssd_portal,gssd",
        "--profile",
        "smoke",
        "--runs",
        str(root / "runs"),
        "--work",
        str(root / "work"),
        *SMALL,
    ]
    assert main(args) == 0
    return root, args


def test_robustness_help_documents_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["robustness", "--help"])
    text = capsys.readouterr().out
    for words in ("--motion-mm", "mPC", "rPC", "oracle", "--cohort", "non-rigid variant"):
        assert words in text


def test_smoke_ladder_writes_tables_and_figure_and_resumes(phantom_ladder, capsys):
    root, args = phantom_ladder
    out = root / "runs" / "robustness" / "synthetic-6p-256px-6z-seed0"
    levels = pd.read_csv(out / "levels.csv")
    assert len(levels) == 4 and set(levels["model"]) == {"gssd_portal", "gssd"}
    x = levels.groupby("level_mm")["misalignment_mm"].first()
    assert x[0.0] == 0.0 and x[8.0] > 4.0
    assert (levels["ap_low"] <= levels["ap"] + 1e-12).all()
    facts = json.loads((out / "summary.json").read_text())
    assert facts["profile"] == "smoke" and facts["patients"] >= 1 and facts["seeds"] == [1111]
    assert facts["devices"] == ["cpu"]
    assert (out / "ladder.png").stat().st_size > 10_000
    assert (
        root / "work" / "robustness" / "synthetic-6p-256px-6z-seed0-motion8mm" / "cohort.json"
    ).exists()
    capsys.readouterr()
    assert main(args) == 0  # rerun: every unit finished before
    text = capsys.readouterr().out
    assert "0 trained, 4 skipped" in text and "rPC" in text
    assert "gssd_portal - gssd" in text
    pairs = pd.read_csv(out / "pairs.csv")
    assert list(zip(pairs["model"], pairs["other"], strict=True)) == [("gssd_portal", "gssd")]


def test_negative_control_portal_only_model_sees_identical_data(phantom_ladder):
    """gssd_portal reads only the portal phase, which the motion never moves: its data and, on
    CPU, its predictions are bit-identical at every level, while gssd's data are not."""
    root, _ = phantom_ladder
    cohorts = [
        Cohort(level_cohort_dir(root / "work", "synthetic-6p-256px-6z-seed0", lv))
        for lv in (0.0, 8.0)
    ]
    for split in ("train", "val", "test"):
        still, moved = (LesionSliceDataset(c, split, 64) for c in cohorts)
        assert len(still) == len(moved)
        other = False
        for i in range(len(still)):
            a, b = still[i], moved[i]
            assert torch_equal(a["image"][6:9], b["image"][6:9])
            assert torch_equal(a["boxes"], b["boxes"])
            other |= not torch_equal(a["image"], b["image"])
        assert other, split
    runs = root / "runs" / "robustness" / "synthetic-6p-256px-6z-seed0"
    folders = [runs / f"synthetic-6p-256px-6z-seed0-motion{lv}mm" / "unregistered" for lv in (0, 8)]
    for split in ("val", "test"):
        files = [
            (f / "gssd_portal" / "seed1111" / f"predictions_{split}.csv").read_bytes()
            for f in folders
        ]
        assert files[0] == files[1]
    summary = pd.read_csv(runs / "summary.csv").set_index("model")
    assert bool(summary.loc["gssd_portal", "identical_predictions"])
    metrics = [
        json.loads((f / "gssd_portal" / "seed1111" / "metrics.json").read_text()) for f in folders
    ]
    assert metrics[0]["test"] == metrics[1]["test"]


def test_positive_control_multiphase_model_loses_more_than_its_interval(tmp_path, capsys):
    """A multiphase detector that learns in a minute (tests/mask_detector.py), on the profile
    tests/positive_control.json: at 20 mm it loses more AP than the width of its level-0 95%
    interval, and the paired loss excludes 0. GSSD cannot show this on CPU in test time (its
    AP is near the floor, docs/results.md); the instrument can."""
    profile = Path(__file__).with_name("positive_control.json")
    args = [
        "robustness", "--motion-mm", "0,20", "--models", "tiny_mask_test",
        "--model-module", "mask_detector", "--profile", str(profile),
        "--runs", str(tmp_path / "runs"), "--work", str(tmp_path / "work"),
    ]  # fmt: skip
    assert main(args) == 0
    out = tmp_path / "runs" / "robustness" / "synthetic-90p-128px-6z-seed0-split30-4-56"
    row = pd.read_csv(out / "summary.csv").set_index("model").loc["tiny_mask_test"]
    assert row["ap0"] > 0.3
    assert row["drop"] > row["ap0_high"] - row["ap0_low"]
    assert row["drop_low"] > 0 and not row["identical_predictions"]
    # the note under the table and figure names the profile file; summary.json keeps its path
    assert "profile positive_control.json (input 128" in capsys.readouterr().out
    assert json.loads((out / "summary.json").read_text())["profile"] == str(profile.resolve())


def torch_equal(a, b) -> bool:
    return bool((a == b).all()) and a.shape == b.shape


def test_real_cohort_path_deforms_the_nonrigid_variant(tmp_path, capsys):
    """--cohort: the non-rigid variant is deformed per level (fields stored, liver masks moved,
    portal and lesion fixed) and each level trained like any cohort."""
    cohort = tmp_path / "mine"
    make_cohort(cohort, patients=6)
    _with_liver(tmp_path / "reg", patients=6)  # a hand-made "registered variant" with liver masks
    (cohort / "variants").mkdir()
    (tmp_path / "reg" / "cohort").rename(cohort / "variants" / "nonrigid")
    args = [
        "robustness",
        "--cohort",
        str(cohort),
        "--motion-mm",
        "0,3",
        "--models",
        "tiny_test",
        "--profile",
        "smoke",
        "--runs",
        str(tmp_path / "runs"),
        "--work",
        str(tmp_path / "work"),
        *SMALL,
    ]
    assert main(args) == 0
    source = Cohort(cohort / "variants" / "nonrigid")
    level = Cohort(tmp_path / "work" / "robustness" / "tinyliver-nonrigid-motion3mm")
    assert level.manifest["params"]["amplitude_mm"] == 3.0 and level.kind == "test"
    for pid in source.patient_ids:
        old, new = source.load(pid), level.load(pid, displacement=True)
        np.testing.assert_array_equal(new.phases[FIXED_PHASE], old.phases[FIXED_PHASE])
        np.testing.assert_array_equal(new.lesion, old.lesion)
        for phase in MOVING_PHASES:
            assert np.abs(new.displacement[phase]).max() > 0.5
            assert not np.array_equal(new.liver[phase], old.liver[phase])
    out = tmp_path / "runs" / "robustness" / "tinyliver-nonrigid"
    measured = pd.read_csv(out / "misalignment.csv")
    assert measured.groupby("level_mm")["mm"].mean().to_dict() == pytest.approx(
        {0.0: 0.0, 3.0: 3.0}, rel=0.15
    )
    assert "tinyliver-nonrigid" in capsys.readouterr().out


def test_report_shows_the_ladder_figure(phantom_ladder, tmp_path):
    from benchmark.analysis.report import write_report

    root, _ = phantom_ladder
    page = write_report(root / "runs", tmp_path / "report.html").read_text()
    assert "Robustness ladder synthetic-6p-256px-6z-seed0" in page
    assert 'alt="robustness ladder" src="data:image/png;base64,' in page
