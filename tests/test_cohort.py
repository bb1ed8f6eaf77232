import numpy as np
import pytest

from benchmark import PHASES
from benchmark.boxes import mask_to_boxes
from benchmark.cohort import Cohort, CohortError, CohortWriter, Patient, assign_splits


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
