"""Import of synthetic DICOM / NIfTI series: geometry, HU, phase assignment and bad files."""

from __future__ import annotations

import json
import re

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLosslessSV1, generate_uid

from benchmark import PHASES
from benchmark.cli import main
from benchmark.cohort import Cohort, save_volume
from benchmark.importer import REPORT, ImportOptions, import_cohort
from benchmark.importer.dicom import read_series, scan
from benchmark.importer.phases import assign_phases, keyword_phase, read_phase_map
from benchmark.importer.resample import Volume, grid_affine, resample, to_lps_grid
from benchmark.importer.volumes import read_mask, read_volume
from benchmark.names import slug

SHAPE = (6, 32, 32)  # slices, rows, columns
GRADIENT = np.array([2.0, -1.5, 3.0])  # HU per mm along L, P, S


def ramp(points: np.ndarray) -> np.ndarray:
    """HU as a linear function of LPS position: trilinear resampling reproduces it exactly."""
    return 40.0 + points @ GRADIENT


def write_series(
    folder,
    *,
    spacing=(2.0, 1.0, 1.0),
    origin=(-16.0, -16.0, -6.0),
    row_dir=(1.0, 0.0, 0.0),
    col_dir=(0.0, 1.0, 0.0),
    shape=SHAPE,
    description="portal venous",
    time="120000",
    patient="p1",
    slope=1.0,
    intercept=-1024.0,
    reverse=False,
    modality="CT",
    uid=None,
    prefix="",
    acquisition=None,
):
    """Write a CT series whose HU follow :func:`ramp`; return the file paths (slice order)."""
    folder.mkdir(parents=True, exist_ok=True)
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    uid = uid or generate_uid(entropy_srcs=[str(folder), description])
    nz, ny, nx = shape
    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    paths = []
    for k in range(nz):
        ipp = np.asarray(origin) + k * spacing[0] * normal
        pts = ipp + jj[..., None] * spacing[1] * col_dir + ii[..., None] * spacing[2] * row_dir
        stored = np.rint((ramp(pts) - intercept) / slope).astype(np.uint16)
        ds = _ct_slice(stored, ipp, row_dir, col_dir, spacing, uid, k, patient, description, time)
        ds.Modality = modality
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        if acquisition is not None:
            ds.AcquisitionNumber = acquisition
        # file names and instance numbers deliberately disagree with the spatial order
        name = f"{prefix}{(nz - k) if reverse else k * 7 % nz}_{k}.dcm"
        ds.InstanceNumber = nz - k if reverse else k + 1
        ds.save_as(folder / name, enforce_file_format=True)
        paths.append(folder / name)
    return paths


def _ct_slice(pixels, ipp, row_dir, col_dir, spacing, uid, k, patient, description, time):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[uid, str(k)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.PatientID = uid, patient
    ds.SeriesDescription, ds.AcquisitionTime = description, time
    ds.ImagePositionPatient = [float(v) for v in ipp]
    ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [spacing[1], spacing[2]]
    ds.SliceThickness = spacing[0]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    return ds


def grid_points(spacing, origin, shape):
    """LPS positions of the voxel centres of a cohort ``[z, y, x]`` grid."""
    affine = grid_affine(spacing, origin)
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def four_phases(root, patient="p1", folder_name=None, **portal):
    """Four series of one patient with different geometry; returns the patient folder."""
    folder = root / (folder_name or patient)
    write_series(
        folder / "pre",
        description="native",
        time="100000",
        patient=patient,
        spacing=(3.0, 1.2, 1.1),
        origin=(-18.0, -20.0, -9.0),
        reverse=True,
    )
    write_series(
        folder / "art",
        description="arterial",
        time="110000",
        patient=patient,
        slope=2.0,
        intercept=-2048.0,
    )
    write_series(
        folder / "pv", description="portal venous", time="120000", patient=patient, **portal
    )
    write_series(
        folder / "del",
        description="delayed",
        time="130000",
        patient=patient,
        origin=(-16.0, -16.0, -10.0),
    )
    return folder


def lesion_file(path, spacing=(2.0, 1.0, 1.0), origin=(-6.0, -16.0, -16.0)):
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:4, 10:20, 5:12] = 1
    save_volume(path, mask, spacing, origin)
    return mask


# ----------------------------------------------------------------------------- readers


def test_rescale_and_shuffled_reversed_order(tmp_path):
    files = write_series(tmp_path / "s", slope=2.0, intercept=-2048.0, reverse=True)
    volume = read_series(list(reversed(files)))
    array, spacing, origin = to_lps_grid(volume)
    assert spacing == pytest.approx((2.0, 1.0, 1.0))
    assert origin == pytest.approx((-6.0, -16.0, -16.0))
    expected = ramp(grid_points(spacing, origin, array.shape))
    np.testing.assert_allclose(array, expected, atol=1.01)  # slope 2: stored values rounded


def test_axis_aligned_flip_is_exact(tmp_path):
    """A series stored right-to-left and bottom-to-top is flipped, not interpolated."""
    files = write_series(
        tmp_path / "s", row_dir=(-1, 0, 0), col_dir=(0, -1, 0), origin=(15.0, 15.0, -6.0)
    )
    array, spacing, origin = to_lps_grid(read_series(files))
    assert origin == pytest.approx((-6.0, -16.0, -16.0))
    np.testing.assert_allclose(
        array, np.rint(ramp(grid_points(spacing, origin, array.shape))), atol=0.5
    )


def test_oblique_is_read_but_rejected_as_grid(tmp_path):
    angle = np.deg2rad(20)
    files = write_series(
        tmp_path / "s",
        row_dir=(np.cos(angle), np.sin(angle), 0),
        col_dir=(-np.sin(angle), np.cos(angle), 0),
    )
    volume = read_series(files)
    with pytest.raises(ValueError, match=r"0_0\.dcm: oblique"):
        to_lps_grid(volume)
    # as a non-reference phase it is resampled by physical position
    spacing, origin, shape = (2.0, 1.0, 1.0), (-6.0, -8.0, -8.0), (4, 12, 12)
    out = resample(volume, shape, grid_affine(spacing, origin), order=1, cval=-1024)
    np.testing.assert_allclose(out, ramp(grid_points(spacing, origin, shape)), atol=1.0)


def test_gap_in_slices_names_the_file(tmp_path):
    files = write_series(tmp_path / "s")
    files[3].unlink()
    with pytest.raises(ValueError, match=rf"{files[4].name}: gap in slice positions"):
        read_series([f for f in files if f.exists()])


def test_gantry_tilt_is_rejected(tmp_path):
    files = write_series(tmp_path / "s")
    ds = pydicom.dcmread(files[2])
    ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + 3.0
    ds.save_as(files[2])
    with pytest.raises(ValueError, match="gantry tilt"):
        read_series(files)


def test_mixed_series_in_one_folder(tmp_path):
    write_series(tmp_path / "s", description="arterial")
    write_series(
        tmp_path / "s", description="delayed", shape=(4, 16, 16), origin=(0.0, 0.0, 0.0), prefix="d"
    )
    found = scan(tmp_path)
    assert sorted(len(s.files) for s in found.series) == [4, 6]
    for series in found.series:
        read_series(series.files)
    # the same SeriesInstanceUID over slices of different size is one clear error
    a = write_series(tmp_path / "m", uid="1.2.3.4")
    b = write_series(tmp_path / "m2", uid="1.2.3.4", shape=(2, 16, 16), origin=(0.0, 0.0, 30.0))
    with pytest.raises(ValueError, match=r"Rows .*mixed series"):
        read_series(a + b)


@pytest.mark.parametrize("case", ["modality", "no_pixels", "truncated", "no_decoder"])
def test_bad_files_name_the_file(tmp_path, case):
    files = write_series(tmp_path / "s", modality="MR" if case == "modality" else "CT")
    bad = files[2]
    if case == "no_pixels":
        ds = pydicom.dcmread(bad)
        del ds.PixelData
        ds.save_as(bad)
    elif case == "truncated":
        data = bad.read_bytes()
        bad.write_bytes(data[: len(data) - 900])
    elif case == "no_decoder":
        ds = pydicom.dcmread(bad)
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([b"\xff\xd8not really jpeg\xff\xd9"])
        ds.save_as(bad, enforce_file_format=True)
    message = {
        "modality": "modality MR, expected CT",
        "no_pixels": "no pixel data",
        "truncated": "truncated",
        "no_decoder": "no decoder is installed .*pylibjpeg",
    }[case]
    with pytest.raises(
        ValueError, match=rf"{bad.name if case != 'modality' else ''}.*{message}"
    ) as err:
        read_series(files)
    assert str(tmp_path) in str(err.value)


def test_nifti_ras_and_nrrd_match_lps(tmp_path):
    import nibabel as nib
    import nrrd

    spacing, origin = (2.0, 1.0, 1.5), (-6.0, -10.0, 12.0)
    hu = np.rint(ramp(grid_points(spacing, origin, SHAPE))).astype(np.int16)
    # same anatomy stored as RAS NIfTI: flip x and y, affine in RAS
    ras = np.flip(np.swapaxes(hu, 0, 2), axis=(0, 1))
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    affine[:3, 3] = [
        -(origin[2] + (SHAPE[2] - 1) * spacing[2]),
        -(origin[1] + (SHAPE[1] - 1) * spacing[1]),
        origin[0],
    ]
    img = nib.Nifti1Image(ras, affine)
    img.header.set_sform(affine, code=1)
    nib.save(img, str(tmp_path / "ras.nii.gz"))
    nrrd.write(
        str(tmp_path / "v.nrrd"),
        np.swapaxes(hu, 0, 2),
        {
            "space": "left-posterior-superior",
            "space directions": np.diag([spacing[2], spacing[1], spacing[0]]),
            "space origin": np.array([origin[2], origin[1], origin[0]]),
        },
    )
    for name in ("ras.nii.gz", "v.nrrd"):
        array, sp, org = to_lps_grid(read_volume(tmp_path / name))
        assert sp == pytest.approx(spacing) and org == pytest.approx(origin)
        np.testing.assert_array_equal(array, hu)


def test_mask_label_selection(tmp_path):
    labels = np.zeros(SHAPE, np.uint8)
    labels[1, 2:4, 2:4] = 5
    labels[3, 5:9, 5:9] = 2
    save_volume(tmp_path / "l.nii.gz", labels, (1.0, 1.0, 1.0))
    assert read_mask(tmp_path / "l.nii.gz", 5).array.sum() == 4
    assert read_mask(tmp_path / "l.nii.gz").array.sum() == 20
    with pytest.raises(ValueError, match=r"l\.nii\.gz: no voxel has label 7"):
        read_mask(tmp_path / "l.nii.gz", 7)


def test_resample_mask_is_nearest_and_exact_on_same_grid():
    mask = np.zeros((4, 8, 8), np.uint8)
    mask[1:3, 2:5, 3:7] = 1
    affine = grid_affine((2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    volume = Volume(mask, affine + 1e-7, "m")
    np.testing.assert_array_equal(resample(volume, mask.shape, affine, order=0, cval=0), mask)
    half = resample(
        volume, (8, 8, 8), grid_affine((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), order=0, cval=0
    )
    assert set(np.unique(half)) == {0, 1}
    assert half[:, 0, 0].sum() == 0 and half[7].sum() == mask[3].sum()  # edge: within half a slice


def test_flipped_and_shifted_grids_are_copied_exactly():
    rng = np.random.default_rng(1)
    data = rng.normal(0, 100, (4, 6, 8)).astype(np.float32)
    target = grid_affine((2.0, 1.0, 0.5), (10.0, -3.0, 7.0))
    # the same voxels stored x-fastest with y flipped (like an LAS label map)
    stored = np.flip(np.transpose(data, (2, 1, 0)), axis=1).copy()
    affine = target[:, [2, 1, 0, 3]].copy()
    affine[:3, 3] += affine[:3, 1] * 5
    affine[:3, 1] *= -1
    np.testing.assert_array_equal(
        resample(Volume(stored, affine, "v"), data.shape, target, order=1, cval=-1024), data
    )
    # shifted by two slices: the slices the source does not cover become cval
    shifted = grid_affine((2.0, 1.0, 0.5), (14.0, -3.0, 7.0))
    out = resample(Volume(data, target, "v"), data.shape, shifted, order=1, cval=-1024)
    np.testing.assert_array_equal(out[:2], data[2:])
    assert np.all(out[2:] == -1024)


# ----------------------------------------------------------------------------- phases


def test_keywords():
    assert keyword_phase("ABD NON-CONTRAST 5mm") == "precontrast"
    assert keyword_phase("Late Arterial") == "arterial"
    assert keyword_phase("PV 3.0 B30f") == "portal"
    assert keyword_phase("Equilibrium") == "delayed"
    assert keyword_phase("Body 3.0") is None
    assert keyword_phase("arterial portal") is None


def test_assign_by_keywords_and_time():
    got = assign_phases(
        [
            ("a", "ART", "1100"),
            ("b", "Body", "1000"),
            ("c", "Body", "1200"),
            ("d", "delayed", "1300"),
        ]
    )
    assert got == {"precontrast": "b", "arterial": "a", "portal": "c", "delayed": "d"}
    with pytest.raises(ValueError, match="two series look arterial"):
        assign_phases(
            [("a", "art", "1"), ("b", "arterial", "2"), ("c", "pv", "3"), ("d", "delayed", "4")]
        )
    with pytest.raises(ValueError, match="cannot fill"):
        assign_phases([("a", "Body", "1"), ("b", "Body", "2"), ("c", "pv", "3")])


def test_phase_map_errors_name_the_line(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("patient,source,phase\np1,a,portal\np1,b,venus\n")
    with pytest.raises(ValueError, match=r"map\.csv:3: phase 'venus'"):
        read_phase_map(path)
    path.write_text("id,file\n")
    with pytest.raises(ValueError, match="header"):
        read_phase_map(path)


# ----------------------------------------------------------------------------- import


def test_import_four_phases_on_portal_grid(tmp_path):
    src = tmp_path / "src"
    four_phases(src)
    lesion = lesion_file(src / "p1_lesion.nii.gz")
    out = tmp_path / "out"
    report = import_cohort(src, out, ImportOptions(lesion_masks=[src / "p1_lesion.nii.gz"]))
    cohort = Cohort(out)
    patient = cohort.load("p1")
    assert patient.spacing == pytest.approx((2.0, 1.0, 1.0))
    assert patient.origin == pytest.approx((-6.0, -16.0, -16.0))
    expected = ramp(grid_points(patient.spacing, patient.origin, patient.shape))
    np.testing.assert_allclose(patient.phases["portal"], np.rint(expected), atol=0.5)
    np.testing.assert_allclose(patient.phases["arterial"], expected, atol=1.6)
    # pre-contrast: coarser, reversed series covering more than the portal field of view
    np.testing.assert_allclose(patient.phases["precontrast"], expected, atol=1.6)
    # delayed starts 4 mm lower: the top slices are outside its field of view -> air
    delayed = patient.phases["delayed"]
    np.testing.assert_allclose(delayed[:4], expected[:4], atol=1.6)
    assert np.all(delayed[4:] == -1024)
    np.testing.assert_array_equal(patient.lesion, lesion)
    assert patient.lesion_phase == "portal"
    info = report["patients"]["p1"]
    assert info["phases"]["delayed"]["fov_coverage"] < 0.75
    assert info["phases"]["arterial"]["series_uid"]
    assert (out / REPORT).exists()
    assert patient.meta["import"]["phases"]["portal"]["geometry"].startswith("reoriented")


def test_import_nifti_phases_by_file_name(tmp_path):
    spacing, origin = (2.0, 1.0, 1.0), (-6.0, -16.0, -16.0)
    hu = np.rint(ramp(grid_points(spacing, origin, SHAPE)))
    folder = tmp_path / "src" / "case1"
    folder.mkdir(parents=True)
    for name in ("native", "arterial", "pv", "equilibrium"):
        save_volume(folder / f"{name}.nii.gz", hu.astype(np.int16), spacing, origin)
    save_volume(folder / "notes_liver_delayed.nii.gz", (hu > 40).astype(np.uint8), spacing, origin)
    lesion = lesion_file(tmp_path / "case1.nii.gz")
    options = ImportOptions(
        lesion_masks=[tmp_path / "case1.nii.gz"],
        liver_masks=[folder / "notes_liver_delayed.nii.gz"],
    )
    import_cohort(tmp_path / "src", tmp_path / "out", options)
    patient = Cohort(tmp_path / "out").load("case1")
    for phase in PHASES:
        np.testing.assert_array_equal(patient.phases[phase], hu)
    np.testing.assert_array_equal(patient.lesion, lesion)
    assert list(patient.liver) == ["delayed"]


def test_bad_patient_is_skipped_and_reported(tmp_path):
    src = tmp_path / "src"
    four_phases(src, "good")
    bad = four_phases(src, "bad")
    gap = sorted((bad / "art").iterdir())[3]
    gap.unlink()
    lesion_file(src / "good" / "lesion.nii.gz")
    lesion_file(src / "bad" / "lesion.nii.gz")
    out = tmp_path / "out"
    rc = main(["data", "import", str(src), "--out", str(out), "--lesion-masks", str(src)])
    assert rc == 0
    assert Cohort(out).patient_ids == ["good"]
    skipped = Cohort(out).root.joinpath(REPORT).read_text()
    assert "patient bad" in skipped and "gap in slice positions" in skipped


def test_truncated_header_is_listed_and_named_as_the_gap(tmp_path):
    files = write_series(tmp_path / "p1" / "s")
    files[2].write_bytes(files[2].read_bytes()[:300])
    found = scan(tmp_path)
    assert [item for item, _ in found.ignored] == [str(files[2])]
    assert "truncated" in found.ignored[0][1]
    with pytest.raises(ValueError, match=rf"{files[3].name}: gap"):
        read_series(found.series[0].files)  # alone, the series can only show where the gap is
    with pytest.raises(ValueError, match=rf"{files[2]}: incomplete DICOM header.*gap of 4\.00 mm"):
        read_series(found.series[0].files, unusable=[(files[2], found.ignored[0][1])])


def test_junk_dcm_is_listed_and_named_as_the_bad_file(tmp_path):
    """A non-DICOM notes.dcm replacing a slice: the error names it, not the slice after it."""
    src = tmp_path / "src"
    four_phases(src, "good")
    bad = four_phases(src, "bad")
    files = sorted((bad / "art").iterdir())
    junk = bad / "art" / "notes.dcm"
    files[3].unlink()
    junk.write_text("scanner notes, not an image\n")
    extra = src / "good" / "pv" / "README.txt"
    extra.write_text("not an image either\n")
    for patient in ("good", "bad"):
        lesion_file(src / patient / "lesion.nii.gz")
    out = tmp_path / "out"
    report = import_cohort(src, out, ImportOptions(lesion_masks=[src]))
    assert Cohort(out).patient_ids == ["good"]
    reasons = {s["item"]: s["reason"] for s in json.loads((out / REPORT).read_text())["skipped"]}
    assert reasons == {s["item"]: s["reason"] for s in report["skipped"]}
    assert "not used" in reasons[str(junk)] and "not used" in reasons[str(extra)]
    assert reasons["patient bad"].startswith(f"{junk}: neither a DICOM file")
    assert "gap of" in reasons["patient bad"]


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_nonfinite_voxels_are_an_error_or_filled_on_request(tmp_path, value, suffix, capsys):
    import nrrd

    spacing, origin = (2.0, 1.0, 1.0), (-6.0, -16.0, -16.0)
    hu = ramp(grid_points(spacing, origin, SHAPE)).astype(np.float32)
    folder = tmp_path / "src" / "case1"
    folder.mkdir(parents=True)
    for name in ("native", "arterial", "pv", "equilibrium"):
        data = hu.copy()
        if name == "pv":
            data[2, 3:5, 4:7] = value  # 6 bad voxels in the portal phase
        path = folder / f"{name}{suffix}"
        if suffix == ".nrrd":
            nrrd.write(
                str(path),
                np.swapaxes(data, 0, 2),
                {
                    "space": "left-posterior-superior",
                    "space directions": np.diag(spacing[::-1]),
                    "space origin": np.array(origin[::-1]),
                },
            )
        else:
            save_volume(path, data, spacing, origin)
    lesion_file(tmp_path / "case1.nii.gz")
    args = ["data", "import", str(tmp_path / "src"), "--out", str(tmp_path / "out")]
    args += ["--lesion-masks", str(tmp_path / "case1.nii.gz")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{folder / ('pv' + suffix)}: 6 of {hu.size} voxels are NaN or infinite" in err
    assert "--fill-nonfinite" in err and not (tmp_path / "out").exists()
    assert main([*args, "--fill-nonfinite", "-1000"]) == 0
    patient = Cohort(tmp_path / "out").load("case1")
    np.testing.assert_array_equal(patient.phases["portal"][2, 3:5, 4:7], -1000)
    np.testing.assert_allclose(patient.phases["portal"][0], np.rint(hu[0]))
    warnings = json.loads((tmp_path / "out" / REPORT).read_text())["patients"]["case1"]["warnings"]
    assert any("6 NaN/infinite voxels replaced by -1000 HU" in w for w in warnings)


def test_nonfinite_mask_is_an_error(tmp_path):
    mask = np.zeros(SHAPE, np.float32)
    mask[1, 2, 3] = np.nan
    save_volume(tmp_path / "m.nii.gz", mask, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=r"m\.nii\.gz: 1 of \d+ voxels are NaN"):
        read_mask(tmp_path / "m.nii.gz")


def test_empty_lesion_mask_skips_the_patient(tmp_path):
    src = tmp_path / "src"
    four_phases(src, "good")
    four_phases(src, "empty")
    lesion_file(src / "good" / "lesion.nii.gz")
    save_volume(src / "empty" / "lesion.nii.gz", np.zeros(SHAPE, np.uint8), (2.0, 1.0, 1.0))
    out = tmp_path / "out"
    import_cohort(src, out, ImportOptions(lesion_masks=[src]))
    assert Cohort(out).patient_ids == ["good"]
    skipped = json.loads((out / REPORT).read_text())["skipped"]
    reason = next(s["reason"] for s in skipped if s["item"] == "patient empty")
    assert reason.startswith(str(src / "empty" / "lesion.nii.gz")) and "lesion mask is empty" in reason


@pytest.mark.filterwarnings("ignore:The value length")  # a long absolute path as PatientID
@pytest.mark.parametrize("kind", ["relative", "absolute"])
def test_patient_id_cannot_leave_out_or_delete_a_folder(tmp_path, kind):
    """PatientID ``../../x`` (or an absolute path) against an existing folder that must survive."""
    work = tmp_path / "work"
    out = work / "out"
    victim = work / "x" if kind == "relative" else tmp_path / "victim"
    victim.mkdir(parents=True)
    work.mkdir(exist_ok=True)
    (victim / "precious.txt").write_text("keep")
    pid = "../../x" if kind == "relative" else str(victim)
    src = tmp_path / "src"
    four_phases(src, pid, folder_name="case")
    lesion_file(src / "lesion.nii.gz")
    before = {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)}
    report = import_cohort(src, out, ImportOptions(lesion_masks=[src / "lesion.nii.gz"]))
    assert (victim / "precious.txt").read_text() == "keep" and sorted(victim.iterdir()) == [
        victim / "precious.txt"
    ]
    assert {p for p in tmp_path.rglob("*") if not p.is_relative_to(out)} == before
    cohort = Cohort(out)
    [cid] = cohort.patient_ids
    assert cid == slug(pid) and re.fullmatch(r"[A-Za-z0-9._-]+-[0-9a-f]{8}", cid)
    assert (out / "patients" / cid / "portal.nii.gz").exists()
    assert report["patients"][cid]["source_id"] == pid
    assert cohort.load(cid).meta["import"]["source_id"] == pid
    assert cohort.manifest["provenance"]["source_ids"] == {cid: pid}


def test_all_bad_leaves_nothing(tmp_path, capsys):
    src = tmp_path / "src"
    write_series(src / "p1" / "mr", modality="MR")
    out = tmp_path / "out"
    assert main(["data", "import", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "modality MR, expected CT" in err and "0_0.dcm" in err
    assert not out.exists()


def test_phases_in_one_series_split_by_acquisition(tmp_path):
    """All four phases stored as one series, told apart by AcquisitionNumber and time."""
    src = tmp_path / "src"
    for n, intercept in enumerate((-1024.0, -1000.0, -990.0, -980.0), start=1):
        write_series(
            src / "p1",
            uid="1.2.3.9",
            description="Abdomen 5mm",
            time=f"1{n}0000",
            intercept=intercept,
            acquisition=n,
            prefix=f"a{n}_",
        )
    lesion_file(src / "p1" / "lesion.nii.gz")
    report = import_cohort(src, tmp_path / "out", ImportOptions(lesion_masks=[src]))
    phases = report["patients"]["p1"]["phases"]
    assert [phases[p]["description"] for p in PHASES] == [
        f"Abdomen 5mm (acquisition {n})" for n in range(1, 5)
    ]
    patient = Cohort(tmp_path / "out").load("p1")
    expected = np.rint(ramp(grid_points(patient.spacing, patient.origin, patient.shape)))
    for phase in PHASES:
        np.testing.assert_allclose(patient.phases[phase], expected, atol=0.5)


def test_oblique_portal_skips_patient(tmp_path):
    src = tmp_path / "src"
    angle = np.deg2rad(15)
    four_phases(src, row_dir=(np.cos(angle), 0, np.sin(angle)), col_dir=(0, 1, 0))
    lesion_file(src / "p1" / "lesion.nii.gz")
    with pytest.raises(ValueError, match=r"p1/pv/.*oblique"):
        import_cohort(src, tmp_path / "out", ImportOptions(lesion_masks=[src]))
    assert not (tmp_path / "out").exists()


def test_phase_map_and_missing_phase(tmp_path):
    src = tmp_path / "src"
    folder = four_phases(src)
    lesion_file(folder / "lesion.nii.gz")
    mapping = tmp_path / "map.csv"
    rows = [
        "patient,source,phase",
        "case7,p1/pv,precontrast",
        "case7,p1/pv,portal",
        "case7,p1/art,arterial",
        "case7,p1/del,delayed",
        "case7,p1/lesion.nii.gz,lesion:arterial",
    ]
    mapping.write_text("\n".join(rows) + "\n")
    import_cohort(src, tmp_path / "out", ImportOptions(phase_map=mapping))
    patient = Cohort(tmp_path / "out").load("case7")
    np.testing.assert_array_equal(patient.phases["precontrast"], patient.phases["portal"])
    assert patient.lesion_phase == "arterial"
    mapping.write_text("\n".join(rows[:3]) + "\n")
    with pytest.raises(ValueError, match=r"phase map gives no \['arterial', 'delayed'\]"):
        import_cohort(
            src, tmp_path / "out2", ImportOptions(phase_map=mapping, lesion_masks=[folder])
        )


def test_cli_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["data", "import", "--help"])
    text = capsys.readouterr().out
    for option in ("--phase-map", "--lesion-masks", "--liver-label", "HCC-TACE-Seg"):
        assert option in text
    assert set(PHASES) <= set(text.replace(",", " ").replace("{", " ").replace("}", " ").split())


def test_rerun_resumes_and_refuses_other_options(tmp_path, capsys):
    src = tmp_path / "src"
    four_phases(src)
    lesion_file(src / "p1" / "lesion.nii.gz")
    args = ["data", "import", str(src), "--out", str(tmp_path / "out"), "--lesion-masks", str(src)]
    assert main(args) == 0
    assert "p1: shape (6, 32, 32)" in capsys.readouterr().out
    assert main(args) == 0
    assert "p1: already imported" in capsys.readouterr().out
    assert main([*args, "--lesion-phase", "arterial"]) == 2
    assert "other parameters" in capsys.readouterr().err
    assert main([*args, "--lesion-phase", "arterial", "--overwrite"]) == 0
    assert Cohort(tmp_path / "out").load("p1").lesion_phase == "arterial"
