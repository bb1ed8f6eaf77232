"""The 2.5D lesion-slice dataset and the SSD augmentations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_cohort import make_cohort, phase_base

from benchmark import PHASES
from benchmark.augment import SSDAugment
from benchmark.cohort import CohortWriter, Patient
from benchmark.dataset import LesionSliceDataset, collate, normalise_hu


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return make_cohort(tmp_path_factory.mktemp("ds") / "tiny", patients=6, noise=0.0)


def mask_bbox(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def test_channel_order_is_phase_major_z_minus_z_z_plus(cohort):
    ds = LesionSliceDataset(cohort, "train")
    item = ds[0]
    z = item["slice"]
    corner = item["image"][:, 0, 0].numpy()  # background pixel, no lesion, no noise
    expected = [
        normalise_hu(np.float32(phase_base(i, z + dz)))
        for i in range(len(PHASES))
        for dz in (-1, 0, 1)
    ]
    np.testing.assert_allclose(corner, expected, atol=1 / 255)
    assert item["image"].shape == (12, 64, 64) and item["image"].dtype == torch.float32


def test_only_lesion_slices_without_first_and_last(tmp_path):
    size, depth = 32, 5
    lesion = np.zeros((depth, size, size), np.uint8)
    lesion[:, 10:20, 8:22] = 1  # lesion on every slice, including the first and last
    lesion[2] = 0  # and a slice without lesion
    phases = {p: np.zeros((depth, size, size), np.float32) for p in PHASES}
    writer = CohortWriter(tmp_path / "c", name="c", kind="test", params={})
    writer.write_patient(Patient("a", phases, lesion, "portal", (1.0, 1.0, 1.0), split="val"))
    ds = LesionSliceDataset(writer.finish(), "val")
    assert [ref.slice for ref in ds.items] == [1, 3]
    np.testing.assert_array_equal(ds[0]["boxes"].numpy(), [[8, 10, 22, 20]])
    np.testing.assert_array_equal(ds[0]["labels"].numpy(), [1])


def test_boxes_match_mask_extents_after_resize(cohort):
    ds = LesionSliceDataset(cohort, "train", input_size=32)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (12, 32, 32)
        np.testing.assert_allclose(
            item["boxes"][0].numpy(), mask_bbox(item["mask"].numpy()), atol=1.5
        )


def test_augmentation_is_seeded_and_keeps_boxes_on_the_mask(cohort):
    ds = LesionSliceDataset(cohort, "train", augment=SSDAugment(48), seed=7)
    a, b, c = ds[(3, 11)], ds[(3, 11)], ds[(3, 12)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["image"], c["image"])
    for draw in range(25):
        item = ds[(draw % len(ds), draw)]
        assert item["image"].shape == (12, 48, 48)
        mask = item["mask"].numpy()
        assert len(item["boxes"]) == 1 and mask.any()
        box, ref = item["boxes"][0].numpy(), mask_bbox(mask)
        np.testing.assert_allclose(box, ref, atol=2.5)  # resampling moves mask edges ~1 px
        np.testing.assert_allclose(box[:2] + box[2:], ref[:2] + ref[2:], atol=3.0)
        # the transform is shared by all channels: channel ordering by phase base HU survives
        background = ~mask.astype(bool)
        means = [item["image"][ch].numpy()[background].mean() for ch in (1, 4, 7, 10)]
        assert means == sorted(means) or max(means) - min(means) < 1e-6


def test_empty_split_is_a_clear_error(tmp_path):
    size = 16
    phases = {p: np.zeros((3, size, size), np.float32) for p in PHASES}
    writer = CohortWriter(tmp_path / "c", name="c", kind="test", params={})
    lesion = np.zeros((3, size, size), np.uint8)
    writer.write_patient(Patient("a", phases, lesion, "portal", (1.0, 1.0, 1.0), split="test"))
    with pytest.raises(ValueError, match="split 'test' has no lesion slices"):
        LesionSliceDataset(writer.finish(), "test")
    with pytest.raises(ValueError, match="unknown split"):
        LesionSliceDataset(tmp_path / "c", "training")


def test_collate_stacks_images_and_keeps_targets(cohort):
    ds = LesionSliceDataset(cohort, "train", input_size=32)
    images, targets = collate([ds[0], ds[1]])
    assert images.shape == (2, 12, 32, 32)
    assert set(targets[0]) == {"boxes", "labels", "masks", "patient", "slice"}
    assert ds.boxes().shape == (len(ds), 4)
