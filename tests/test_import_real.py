"""Import of real CT fixtures (``../shared/data/real-ct``; skipped when absent) and CT_small.dcm."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from benchmark import PHASES
from benchmark.cli import main
from benchmark.cohort import Cohort, load_volume, save_volume
from benchmark.importer.build import place_mask
from benchmark.importer.dicom import read_series
from benchmark.importer.resample import grid_affine, to_lps_grid
from benchmark.importer.volumes import read_mask, read_volume
from registration.metrics import dice


def _on_grid(volume):
    array, spacing, origin = to_lps_grid(volume)
    return array, grid_affine(spacing, origin)


@pytest.mark.realdata
def test_shuffled_dicom_series_is_sorted_by_position(real_ct):
    files = sorted((real_ct / "totalsegmentator-example" / "example_ct_dicom").iterdir())
    shuffled = [files[i] for i in np.random.default_rng(3).permutation(len(files))]
    volume = read_series(shuffled)
    assert volume.array.shape == (20, 512, 512)
    assert volume.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    by_z = sorted(
        files,
        key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    for k in (0, 7, 19):
        ds = pydicom.dcmread(by_z[k])
        np.testing.assert_array_equal(
            volume.array[k], ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        )


@pytest.mark.realdata
def test_dicom_as_four_phases_with_las_liver_map(real_ct, tmp_path, capsys):
    """Full path: one real series as all four phases, liver label map stored in LAS."""
    folder = real_ct / "totalsegmentator-example"
    mapping = tmp_path / "map.csv"
    rows = [f"ts,{folder / 'example_ct_dicom'},{phase}" for phase in PHASES]
    rows += [
        f"ts,{folder / 'example_seg_dicom.nii.gz'},liver:portal",
        f"ts,{folder / 'example_seg_dicom.nii.gz'},lesion",
    ]
    mapping.write_text("patient,source,phase\n" + "\n".join(rows) + "\n")
    out = tmp_path / "cohort"
    args = [
        "data",
        "import",
        str(folder / "example_ct_dicom"),
        "--out",
        str(out),
        "--phase-map",
        str(mapping),
        "--liver-label",
        "5",
        "--lesion-label",
        "5",
    ]
    assert main(args) == 0
    assert "ts: shape (20, 512, 512)" in capsys.readouterr().out
    cohort = Cohort(out)
    assert cohort.record("ts")["liver_phases"] == ["portal"]
    folder = cohort.patient_dir("ts")  # read only what is checked: the volumes are large
    hu, liver = (load_volume(folder / f"{name}.nii.gz")[0] for name in ("portal", "liver_portal"))
    assert abs(hu[liver > 0].mean() - 89) < 5  # README: liver about 89 HU
    mirrored = np.flip(liver, axis=1)  # anterior-posterior mirror image (LAS vs LPS by index)
    assert abs(hu[mirrored > 0].mean() - 89) > 50
    assert np.argwhere(liver)[:, 2].mean() < 256  # liver on the patient's right (low LPS x)
    np.testing.assert_array_equal(load_volume(folder / "lesion.nii.gz")[0], liver)
    meta = json.loads((folder / "patient.json").read_text())["meta"]["import"]
    assert meta["phases"]["portal"]["files"] == 20 and meta["lesion"]["label"] == 5


@pytest.mark.realdata
def test_ras_nifti_liver_mean(real_ct):
    folder = real_ct / "totalsegmentator-example"
    hu, affine = _on_grid(read_volume(folder / "example_ct.nii.gz"))
    liver = place_mask(read_mask(folder / "example_ct_liver.nii.gz"), hu.shape, affine, [])
    assert liver.sum() == 41602
    assert abs(hu[liver > 0].mean() - 44) < 5  # README: liver about 44 HU
    assert np.argwhere(liver)[:, 2].mean() < hu.shape[2] / 2  # patient's right


@pytest.mark.realdata
def test_misleading_origin_is_caught(real_ct):
    """example_ct_sm is slices 82-111 but keeps the full volume's origin in its header."""
    folder = real_ct / "totalsegmentator-example"
    small = read_volume(folder / "example_ct_sm.nii.gz")
    hu, affine = _on_grid(small)
    # its own label map shares the (wrong) header, so the two still agree with each other
    liver = place_mask(read_mask(folder / "example_ct_sm_seg.nii.gz", 5), hu.shape, affine, [])
    assert abs(hu[liver > 0].mean() - 44) < 8
    # the full-volume liver mask, placed by physical position, falls outside: a clear error
    with pytest.raises(
        ValueError, match=r"example_ct_liver\.nii\.gz: all 41602 labelled voxels lie outside"
    ):
        place_mask(read_mask(folder / "example_ct_liver.nii.gz"), hu.shape, affine, [])


@pytest.mark.realdata
def test_dicom_seg_equals_nrrd(real_ct, tmp_path):
    folder = real_ct / "dcmqi-liver-3slice"
    hu, affine = _on_grid(read_series(sorted((folder / "ct-3slice").iterdir())))
    assert hu.shape == (3, 512, 512)
    from_nrrd = place_mask(read_mask(folder / "liver_seg.nrrd"), hu.shape, affine, [])
    assert from_nrrd.sum() == 107098
    assert -20 < hu[from_nrrd > 0].mean() < 150
    # full import: the SEG finds its patient through the series it references
    mapping = tmp_path / "map.csv"
    mapping.write_text("patient,source,phase\n" + "".join(f"99000,ct-3slice,{p}\n" for p in PHASES))
    out = tmp_path / "out"
    seg = str(folder / "liver.dcm")
    args = [
        "data",
        "import",
        str(folder),
        "--out",
        str(out),
        "--phase-map",
        str(mapping),
        "--lesion-masks",
        seg,
        "--liver-masks",
        seg,
        "--liver-label",
        "1",
    ]
    assert main(args) == 0
    skipped = {
        item["item"]: item["reason"]
        for item in json.loads((out / "import_report.json").read_text())["skipped"]
    }
    assert "looks like a mask" in skipped[str(folder / "liver_seg.nrrd")] and seg not in skipped
    patient = Cohort(out).load("99000")
    np.testing.assert_array_equal(patient.phases["portal"], hu)
    assert dice(from_nrrd, patient.liver["portal"]) == 1.0
    assert dice(from_nrrd, patient.lesion) == 1.0


def test_ct_small(tmp_path):
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    volume = read_series([path])
    array, spacing, origin = to_lps_grid(volume)
    assert array.shape == (1, 128, 128)
    assert spacing == pytest.approx((5.0, 0.661468, 0.661468))
    assert origin == pytest.approx(tuple(float(v) for v in ds.ImagePositionPatient)[::-1])
    np.testing.assert_array_equal(array[0], ds.pixel_array.astype(np.float32) - 1024)
    # end to end: CT_small as all four phases with a lesion drawn on its grid
    src = tmp_path / "src" / "small"
    src.mkdir(parents=True)
    shutil.copy(path, src / "CT_small.dcm")
    lesion = np.zeros(array.shape, np.uint8)
    lesion[0, 40:60, 50:70] = 1
    save_volume(tmp_path / "small_lesion.nii.gz", lesion, spacing, origin)
    mapping = tmp_path / "map.csv"
    mapping.write_text(
        "patient,source,phase\n" + "".join(f"small,small/CT_small.dcm,{p}\n" for p in PHASES)
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "data",
                "import",
                str(tmp_path / "src"),
                "--out",
                str(out),
                "--phase-map",
                str(mapping),
                "--lesion-masks",
                str(tmp_path / "small_lesion.nii.gz"),
            ]
        )
        == 0
    )
    patient = Cohort(out).load("small")
    np.testing.assert_array_equal(patient.phases["arterial"], array)
    np.testing.assert_array_equal(patient.lesion, lesion)
