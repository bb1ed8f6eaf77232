import json
import re

import nibabel as nib
import numpy as np
import pytest

from benchmark import PHASES
from benchmark.atomic import atomic_path
from benchmark.boxes import mask_to_boxes
from benchmark.cohort import (
    Cohort,
    CohortError,
    CohortWriter,
    Patient,
    assign_splits,
    load_displacement,
    save_displacement,
    save_volume,
)
from benchmark.names import is_safe_name, slug, slugs


def _patient(pid: str, split: str = "train") -> Patient:
    rng = np.random.default_rng(0)
    shape = (5, 32, 40)
    phases = {p: rng.normal(50, 10, shape).astype(np.float32) for p in PHASES}
    lesion = np.zeros(shape, np.uint8)
    lesion[2, 10:20, 5:15] = 1
    disp = {p: np.zeros((*shape, 3), np.float32) for p in PHASES}
    disp["arterial"][..., 0] = 2.5
    return Patient(
        id=pid, phases=phases, lesion=lesion, lesion_phase="delayed", spacing=(5.0, 0.8, 0.7),
        origin=(10.0, -20.0, 30.0), split=split, liver={p: lesion.copy() for p in PHASES},
        displacement=disp,
    )


def test_round_trip(tmp_path):
    writer = CohortWriter(tmp_path / "c", name="t", kind="test", params={"a": 1})
    src = _patient("p1")
    writer.write_patient(src)
    cohort = writer.finish()
    back = cohort.load("p1", displacement=True)
    assert back.spacing == pytest.approx(src.spacing)
    assert back.origin == pytest.approx(src.origin)
    for p in PHASES:
        np.testing.assert_allclose(back.phases[p], np.rint(src.phases[p]))
    np.testing.assert_array_equal(back.lesion, src.lesion)
    np.testing.assert_allclose(back.displacement["arterial"][..., 0], 2.5)
    assert back.lesion_phase == "delayed"
    assert cohort.split_ids("train") == ["p1"]


def test_incomplete_cohort_is_refused_and_resumes(tmp_path):
    root = tmp_path / "c"
    writer = CohortWriter(root, name="t", kind="test", params={"a": 1})
    writer.write_patient(_patient("p1"))
    with pytest.raises(CohortError, match="incomplete"):
        Cohort(root)
    again = CohortWriter(root, name="t", kind="test", params={"a": 1})
    assert again.done() == {"p1"}
    with pytest.raises(CohortError, match="other parameters"):
        CohortWriter(root, name="t", kind="test", params={"a": 2})


def test_not_a_cohort(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(CohortError, match="not empty"):
        CohortWriter(tmp_path, name="t", kind="test", params={})
    with pytest.raises(CohortError, match="not a cohort"):
        Cohort(tmp_path)


def test_bad_patient_shapes_are_named(tmp_path):
    p = _patient("p1")
    p.lesion = p.lesion[:, :10]
    writer = CohortWriter(tmp_path / "c", name="t", kind="test", params={})
    with pytest.raises(CohortError, match="p1: lesion"):
        writer.write_patient(p)
    assert not any((tmp_path / "c" / "patients").iterdir())


def test_splits_follow_paper_proportions():
    ids = [f"p{i:03d}" for i in range(280)]
    splits = assign_splits(ids, seed=1)
    counts = {s: list(splits.values()).count(s) for s in ("train", "val", "test")}
    assert counts == {"train": 216, "val": 54, "test": 10}
    assert splits == assign_splits(list(reversed(ids)), seed=1)
    assert set(assign_splits(ids[:5], seed=0).values()) == {"train", "val", "test"}


def test_mask_to_boxes_extents():
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:25] = 1
    mask[40:60, 40:50] = 1
    boxes = mask_to_boxes(mask)
    np.testing.assert_array_equal(boxes, [[5, 10, 25, 30], [40, 40, 50, 60]])


# ----------------------------------------------------------------------------- names


def test_slug_keeps_safe_ids_and_hashes_changed_ones():
    assert slug("HCC_001") == "HCC_001" and slug("phantom0000") == "phantom0000"
    for unsafe in ("../../x", "/etc/passwd", ".hidden", "a b", "Müller", "x\x00y", "", "-rf"):
        name = slug(unsafe)
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{8}", name), (unsafe, name)
        assert is_safe_name(name) and len(name) <= 64
    assert slug("../../x").startswith("x-") and slug("a/b") != slug("a b")
    long = "p" * 100
    assert len(slug(long)) == 64 and slug(long) != slug(long + "q")


def test_slugs_separate_ids_that_differ_only_in_case():
    ids = slugs(["P1", "p1", "p2"])
    assert ids["p2"] == "p2"
    assert len({name.casefold() for name in ids.values()}) == 3
    assert ids["P1"].startswith("P1-") and ids["p1"].startswith("p1-")
    taken = slug("../x")  # an id that happens to equal another's slug gets the hash too
    ids = slugs(["../x", taken])
    assert ids["../x"] == taken and ids[taken].startswith(taken + "-")
    with pytest.raises(ValueError, match="same folder name"):  # contrived: still one name
        slugs(["../x", taken, ids[taken]])


@pytest.mark.parametrize("bad", ["../x", "a/b", ".p1", "..", "", "a\\b"])
def test_unsafe_ids_are_refused_on_write_and_read(tmp_path, bad):
    writer = CohortWriter(tmp_path / "c", name="t", kind="test", params={})
    with pytest.raises(CohortError, match="patient id"):
        writer.write_patient(_patient(bad))
    writer.write_patient(_patient("p1"))
    writer.finish()
    manifest = tmp_path / "c" / "cohort.json"
    data = json.loads(manifest.read_text())
    data["patients"][0]["id"] = bad
    manifest.write_text(json.dumps(data))
    with pytest.raises(CohortError, match=r"cohort\.json: patient id"):
        Cohort(tmp_path / "c")
    with pytest.raises(CohortError, match="cohort name"):
        CohortWriter(tmp_path / "d", name="../d", kind="test", params={})


def test_atomic_path_never_replaces_an_existing_folder(tmp_path):
    target = tmp_path / "x"
    target.mkdir()
    (target / "precious.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not replacing"), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert (target / "precious.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]  # the temporary folder is gone
    with atomic_path(tmp_path / "f.txt") as tmp:  # files are updated in place, atomically
        tmp.write_text("one")
    with atomic_path(tmp_path / "f.txt") as tmp:
        tmp.write_text("two")
    assert (tmp_path / "f.txt").read_text() == "two"


def test_overwrite_replaces_only_a_cohort(tmp_path):
    (tmp_path / "notes.txt").write_text("keep")
    with pytest.raises(CohortError, match="not a cohort"):
        CohortWriter(tmp_path, name="t", kind="test", params={}, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "keep"


# ----------------------------------------------------------------------------- displacement


def _field(shape=(4, 5, 6)) -> np.ndarray:
    """A field with distinct (dz, dy, dx) everywhere, so any axis or sign mix-up shows."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    return np.stack([0.5 + z - 0.3 * x, -1.25 + 0.2 * y * z, 0.75 - 0.1 * x + y], axis=-1)


def test_displacement_is_a_nifti_displacement_field(tmp_path):
    spacing, origin = (5.0, 0.8, 0.7), (10.0, -20.0, 30.0)
    field = _field()
    save_displacement(tmp_path / "d.nii.gz", field, spacing, origin)
    img = nib.load(tmp_path / "d.nii.gz")
    assert img.shape == (6, 5, 4, 1, 3) and int(img.header["intent_code"]) == 1006
    # on disk: components (R, A, S) = (-dx, -dy, dz) in the NIfTI world frame
    dz, dy, dx = field[3, 4, 5]
    np.testing.assert_allclose(np.asarray(img.dataobj)[5, 4, 3, 0], [-dx, -dy, dz])
    np.testing.assert_array_equal(load_displacement(tmp_path / "d.nii.gz"), field)


@pytest.mark.slow  # loading ITK's IO and transform modules takes half a minute
@pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")
def test_itk_reads_the_field_as_a_displacement_field(tmp_path):
    """ITK reads the file as a vector image whose transform moves each point by the field."""
    itk = pytest.importorskip("itk")
    spacing, origin = (5.0, 0.8, 0.7), (10.0, -20.0, 30.0)
    field = _field()
    path = tmp_path / "d.nii.gz"
    save_displacement(path, field, spacing, origin)
    image = itk.imread(str(path), itk.Vector[itk.F, 3])
    transform = itk.DisplacementFieldTransform[itk.F, 3].New()
    transform.SetDisplacementField(image)
    for z, y, x in [(0, 0, 0), (2, 3, 4), (3, 4, 5), (1, 0, 5)]:
        point = np.array(image.TransformIndexToPhysicalPoint([x, y, z]))  # ITK: LPS (x, y, z)
        lps = [origin[2] + x * spacing[2], origin[1] + y * spacing[1], origin[0] + z * spacing[0]]
        np.testing.assert_allclose(point, lps, atol=1e-5)
        moved = np.array(transform.TransformPoint(point.tolist()))
        np.testing.assert_allclose(moved - point, field[z, y, x, ::-1], atol=1e-5)


def test_version_1_cohort_fields_are_still_read(tmp_path):
    """Format version 1 stored fields as plain 4D (x, y, z, 3) arrays of (dz, dy, dx)."""
    writer = CohortWriter(tmp_path / "c", name="t", kind="test", params={})
    src = _patient("p1")
    src.displacement["arterial"] = _field(src.shape)
    writer.write_patient(src)
    cohort = writer.finish()
    folder = cohort.patient_dir("p1")
    for phase, disp in src.displacement.items():  # rewrite as version 1 did
        path = folder / f"displacement_{phase}.nii.gz"
        save_volume(path, disp.astype(np.float32), src.spacing, src.origin)
    manifest = tmp_path / "c" / "cohort.json"
    data = json.loads(manifest.read_text())
    assert data["version"] == 2
    manifest.write_text(json.dumps({**data, "version": 1}))
    back = Cohort(tmp_path / "c").load("p1", displacement=True)
    np.testing.assert_array_equal(back.displacement["arterial"], src.displacement["arterial"])
    manifest.write_text(json.dumps({**data, "version": 3}))
    with pytest.raises(CohortError, match="newer"):
        Cohort(tmp_path / "c")
