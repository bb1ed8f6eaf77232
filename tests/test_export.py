"""``data export --format dicom``: CT series, DICOM SEG masks, conformance, round trip."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, SegmentationStorage

from benchmark import PHASES
from benchmark.cli import main
from benchmark.cohort import Cohort, CohortWriter, Patient
from benchmark.importer import ImportOptions, import_cohort
from benchmark.importer.resample import to_lps_grid
from benchmark.importer.volumes import read_mask

SPACING, ORIGIN, SHAPE = (2.5, 0.7, 0.8), (-12.0, -20.0, 30.0), (5, 24, 28)


def _patient(pid: str, seed: int) -> Patient:
    rng = np.random.default_rng(seed)
    phases = {p: rng.integers(-1200, 1500, SHAPE).astype(np.float32) for p in PHASES}
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[1:3, 5:12, 8:20] = 1
    lesion[3, 6:8, 9:11] = 1  # no symmetry: a flip in any axis would show
    liver = np.zeros(SHAPE, np.uint8)
    liver[:4, 3:20, 2:15] = 1
    return Patient(
        pid,
        phases,
        lesion,
        "arterial",
        SPACING,
        ORIGIN,
        liver={"portal": liver, "delayed": liver[:, ::-1].copy()},
    )


@pytest.fixture
def cohort(tmp_path):
    writer = CohortWriter(tmp_path / "cohort", name="tiny", kind="test", params={})
    for i, pid in enumerate(("p1", "p2")):
        writer.write_patient(_patient(pid, i))
    return writer.finish()


def test_export_writes_ct_series(cohort, tmp_path):
    out = tmp_path / "dicom"
    assert main(["data", "export", str(cohort.root), "--out", str(out), "--format", "dicom"]) == 0
    uids = set()
    for phase in PHASES:
        files = sorted((out / "p1" / phase).iterdir())
        assert len(files) == SHAPE[0]
        ds = pydicom.dcmread(files[2])
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert phase in ds.SeriesDescription
        assert [float(v) for v in ds.ImagePositionPatient] == pytest.approx(
            [30.0, -20.0, -12.0 + 2 * 2.5]
        )
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.7, 0.8])
        assert float(ds.SliceThickness) == pytest.approx(2.5)
        assert float(ds.RescaleIntercept) == -1024
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, np.maximum(cohort.load("p1").phases[phase][2], -1024))
        uids.add(ds.SeriesInstanceUID)
    assert len(uids) == 4
    assert sorted(f.name for f in (out / "p1").glob("*.dcm")) == [
        "lesion_arterial.dcm",
        "liver_delayed.dcm",
        "liver_portal.dcm",
    ]
    assert (out / "phase_map.csv").exists() and not (out / ".partial-export").exists()
    # refuses to write into a non-empty folder
    assert main(["data", "export", str(cohort.root), "--out", str(out)]) == 2


def test_masks_are_dicom_seg_on_their_phase(cohort, tmp_path):
    """Each mask is a SEG referencing its phase's series; our importer reads it back exactly."""
    out = tmp_path / "dicom"
    main(["data", "export", str(cohort.root), "--out", str(out)])
    source = cohort.load("p2")
    for name, phase, expected in [
        ("lesion", "arterial", source.lesion),
        ("liver", "portal", source.liver["portal"]),
        ("liver", "delayed", source.liver["delayed"]),
    ]:
        path = out / "p2" / f"{name}_{phase}.dcm"
        seg = pydicom.dcmread(path)
        assert seg.SOPClassUID == SegmentationStorage
        assert seg.SegmentSequence[0].SegmentLabel == name.capitalize()
        series = pydicom.dcmread(out / "p2" / phase / "0001.dcm").SeriesInstanceUID
        assert [r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence] == [series]
        array, spacing, origin = to_lps_grid(read_mask(path))
        assert spacing == pytest.approx(SPACING) and origin == pytest.approx(ORIGIN)
        np.testing.assert_array_equal(array, expected)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_export_passes_dciodvfy(cohort, tmp_path):
    out = tmp_path / "dicom"
    main(["data", "export", str(cohort.root), "--out", str(out)])
    files = [out / "p1" / phase / "0002.dcm" for phase in PHASES]
    files += sorted((out / "p1").glob("*.dcm"))
    for path in files:
        result = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, check=False
        )
        text = result.stdout + result.stderr
        errors = [line for line in text.splitlines() if line.startswith("Error")]
        assert errors == [], f"{path}:\n" + "\n".join(errors)
        assert "CTImage" in text or "Segmentation" in text  # the IOD was recognised


def test_overwrite_replaces_only_an_export(cohort, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = ["data", "export", str(cohort.root), "--out", str(out)]
    assert main([*args, "--overwrite"]) == 2
    assert (out / "notes.txt").read_text() == "keep me"
    export = tmp_path / "dicom"
    assert main(["data", "export", str(cohort.root), "--out", str(export)]) == 0
    assert main(["data", "export", str(cohort.root), "--out", str(export), "--overwrite"]) == 0
    assert (export / "phase_map.csv").exists()


@pytest.mark.parametrize("use_map", [True, False])
def test_round_trip(cohort, tmp_path, use_map):
    out = tmp_path / "dicom"
    main(["data", "export", str(cohort.root), "--out", str(out)])
    options = (
        ImportOptions(phase_map=out / "phase_map.csv")
        if use_map
        else ImportOptions(lesion_masks=[out], liver_masks=[out])
    )
    import_cohort(out, tmp_path / "back", options)
    back = Cohort(tmp_path / "back")
    assert back.patient_ids == cohort.patient_ids
    for pid in cohort.patient_ids:
        a, b = cohort.load(pid), back.load(pid)
        assert b.spacing == pytest.approx(a.spacing) and b.origin == pytest.approx(a.origin)
        for phase in PHASES:
            np.testing.assert_array_equal(b.phases[phase], np.maximum(a.phases[phase], -1024))
        np.testing.assert_array_equal(b.lesion, a.lesion)
        assert b.lesion_phase == "arterial"
        assert sorted(b.liver) == ["delayed", "portal"]
        for phase in b.liver:
            np.testing.assert_array_equal(b.liver[phase], a.liver[phase])


def test_export_is_deterministic(cohort, tmp_path):
    main(["data", "export", str(cohort.root), "--out", str(tmp_path / "a")])
    main(["data", "export", str(cohort.root), "--out", str(tmp_path / "b")])
    a = pydicom.dcmread(tmp_path / "a" / "p2" / "portal" / "0003.dcm")
    b = pydicom.dcmread(tmp_path / "b" / "p2" / "portal" / "0003.dcm")
    assert a.SOPInstanceUID == b.SOPInstanceUID and a.StudyInstanceUID == b.StudyInstanceUID
