"""Improved RetinaNet rows and the differential-evolution anchor optimiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detector_battery import (
    batch,
    build,
    check_autocast,
    check_deterministic,
    check_eval_format,
    check_interface,
    check_losses_and_gradients,
)
from torchvision.models.detection.image_list import ImageList

import models
from models.anchor_opt import (
    DEFAULT_BASE_SIZES,
    DEFAULT_RATIOS,
    DEFAULT_SCALES,
    best_anchor_iou,
    mean_best_anchor_iou,
    optimise_anchors,
)
from models.retinanet import STRIDES

SIZE, WIDTH = 64, 0.25
ROWS = {"retinanet_improved": True, "retinanet_gconv": False, "retinanet_gconv_mask": True}
SCALES, RATIOS = (0.4, 0.55, 0.75), (0.4, 0.65, 1.0, 1.5, 2.5)


def test_registered_rows() -> None:
    assert models.info("retinanet_improved").paper_row == "Improved RetinaNet [14] †"
    assert models.info("retinanet_gconv_mask").paper_row.endswith("†")
    assert not models.info("retinanet_gconv").paper_row.endswith("†")
    assert all(models.info(n).table == "I" for n in ROWS)


@pytest.mark.parametrize(("name", "masks"), ROWS.items())
def test_battery(name: str, masks: bool) -> None:
    model = build(name, input_size=SIZE, width=WIDTH, anchor_scales=SCALES, anchor_ratios=RATIOS)
    check_interface(model, SIZE, masks=masks)
    losses = model.train()(*batch(SIZE))
    assert ("mask" in losses) == masks
    assert model.retina.anchor_generator.num_anchors_per_location() == [15] * 5
    check_losses_and_gradients(model, SIZE)
    check_eval_format(model, SIZE)
    check_autocast(model, SIZE)


def test_deterministic() -> None:
    check_deterministic("retinanet_gconv_mask", SIZE, input_size=SIZE, width=WIDTH)


def test_grouped_trunk_and_fusion_only_in_gconv_rows() -> None:
    single = build("retinanet_improved", width=WIDTH)
    grouped = build("retinanet_gconv", width=WIDTH)
    assert single.retina.backbone.trunk.groups == 1 and single.retina.backbone.fusion is None
    assert grouped.retina.backbone.trunk.groups == 4 and grouped.retina.backbone.fusion is not None
    box_only = build("retinanet_improved", width=WIDTH, mask_supervision=False)
    assert box_only.mask_head is None and len(box_only.supervision) == 1


def test_mask_supervision_needs_masks() -> None:
    model = build("retinanet_gconv_mask", input_size=SIZE, width=WIDTH).train()
    images, targets = batch(SIZE)
    for t in targets:
        del t["masks"]
    with pytest.raises(ValueError, match="masks"):
        model(images, targets)


def test_bad_anchor_overrides() -> None:
    with pytest.raises(ValueError, match="> 0"):
        build("retinanet_gconv", width=WIDTH, anchor_scales=(0.0, 1.0))


# ---- anchor optimiser ---------------------------------------------------------------------


def _lesion_boxes(n: int, seed: int) -> np.ndarray:
    """Small, mostly round boxes (lesion-like) at random places of a 128-px image."""
    rng = np.random.default_rng(seed)
    side = np.exp(rng.normal(np.log(12.0), 0.5, n))
    aspect = np.exp(rng.normal(0.0, 0.25, n))
    w, h = side / np.sqrt(aspect), side * np.sqrt(aspect)
    c = rng.uniform(20, 108, (n, 2))
    return np.stack([c[:, 0] - w / 2, c[:, 1] - h / 2, c[:, 0] + w / 2, c[:, 1] + h / 2], 1)


def test_optimiser_beats_default_anchors_and_is_seeded() -> None:
    boxes = _lesion_boxes(100, seed=1)
    scales, ratios = optimise_anchors(boxes, seed=7, maxiter=30)
    assert len(scales) == 3 and len(ratios) == 5 and 1.0 in ratios
    assert np.allclose(np.sort(ratios) * np.sort(ratios)[::-1], 1.0)  # symmetric pairs r, 1/r
    default = mean_best_anchor_iou(boxes, DEFAULT_SCALES, DEFAULT_RATIOS)
    tuned = mean_best_anchor_iou(boxes, scales, ratios)
    assert tuned > default + 0.1, (default, tuned)
    held_out = _lesion_boxes(200, seed=2)  # generalises to boxes of the same distribution
    assert mean_best_anchor_iou(held_out, scales, ratios) > mean_best_anchor_iou(
        held_out, DEFAULT_SCALES, DEFAULT_RATIOS
    )
    assert optimise_anchors(boxes, seed=7, maxiter=30) == (scales, ratios)


def test_best_anchor_iou_exact_match() -> None:
    # a 32 x 16 box (h/w = 0.5) is anchor (base 16, scale sqrt(2)*..., ratio 0.5) exactly
    boxes = np.array([[0.0, 0.0, 32.0, 16.0]])
    side = np.sqrt(32.0 * 16.0) / 16.0
    assert best_anchor_iou(boxes, (side,), (0.5,)) == pytest.approx([1.0])
    assert best_anchor_iou(boxes, (side,), (2.0,))[0] < 0.5


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        (np.zeros((0, 4)), "no boxes"),
        (np.ones((3, 3)), r"\[N, 4\]"),
        (np.array([[5, 5, 5, 9.0]]), "positive"),
    ],
)
def test_optimiser_rejects_bad_boxes(boxes: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        optimise_anchors(boxes, seed=0)


def test_optimised_anchors_build_a_model() -> None:
    scales, ratios = optimise_anchors(_lesion_boxes(50, seed=3), seed=0, maxiter=20)
    model = build(
        "retinanet_gconv", input_size=SIZE, width=WIDTH, anchor_scales=scales, anchor_ratios=ratios
    )
    assert model.anchor_scales == scales and model.anchor_ratios == ratios
    with torch.no_grad():
        assert isinstance(model.eval()(batch(SIZE)[0]), list)


def test_anchors_on_true_strides_cover_the_image() -> None:
    assert tuple(4.0 * s for s in STRIDES) == DEFAULT_BASE_SIZES
    size = 300  # ceil-mode grids 75, 38, 19, 10, 5: torchvision would use strides 4, 7, 15, ...
    model = build(
        "retinanet_gconv", input_size=size, width=0.0625, anchor_scales=(1.0,), anchor_ratios=(1.0,)
    )
    images = torch.zeros(1, 12, size, size)
    feats = list(model.retina.backbone(images).values())
    anchors = model.retina.anchor_generator(ImageList(images, [(size, size)]), feats)[0]
    per_level = anchors.split([f.shape[-1] ** 2 for f in feats])
    for level, stride in zip(per_level, STRIDES, strict=True):
        centres = (level[:, :2] + level[:, 2:]) / 2
        assert centres.min().item() == pytest.approx(stride / 2)
        assert centres.max().item() > size - stride  # the last cell reaches the image border
        side = (level[:, 2] - level[:, 0]).unique()
        assert side.tolist() == [pytest.approx(4.0 * stride)]


def test_head_norm_switch() -> None:
    def norms(model: torch.nn.Module) -> int:
        return sum(isinstance(m, torch.nn.GroupNorm) for m in model.retina.head.modules())

    assert norms(build("retinanet_gconv", width=WIDTH)) == 8  # 4 convs x 2 subnets
    assert norms(build("retinanet_gconv", width=WIDTH, head_norm=False)) == 0
