"""PixelLink, PixelLink + G.Conv & C.Fusion, PixelLink++ and its ablations; decoding on hand-made maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detector_battery import (
    build,
    check_autocast,
    check_deterministic,
    check_eval_format,
    check_interface,
    check_losses_and_gradients,
)

import models
from models.attention import SelfAttention
from models.deform import DCModule
from models.pixellink import _link_loss, _pixel_loss
from models.pixellink_decode import (
    LINK_THRESHOLD,
    MIN_AREA,
    NEIGHBOURS,
    PIXEL_THRESHOLD,
    decode,
    instance_map,
    link_targets,
)

SIZE, WIDTH = 64, 0.25
ROWS = ["pixellink", "pixellink_gconv", "pixellink_pp"]
ABLATIONS = [
    "pixellink_pp_no_phase_offsets",
    "pixellink_pp_no_dc",
    "pixellink_pp_no_sa_base",
    "pixellink_pp_no_sa_fusion",
    "pixellink_pp_no_interphase",
]


def test_registered_rows() -> None:
    for name in ROWS:
        assert models.info(name).table == "I"
    for name in ABLATIONS:
        info = models.info(name)
        assert info.table == "III" and info.paper_row.startswith("PixelLink++ w/o ")


@pytest.mark.parametrize("name", ROWS + ABLATIONS)
def test_battery(name: str) -> None:
    model = build(name, input_size=SIZE, width=WIDTH)
    check_interface(model, SIZE, masks=False)
    maps = model.score_maps(torch.zeros(1, 12, SIZE, SIZE))
    assert maps.shape == (1, 18, SIZE // 4, SIZE // 4)
    # the trunk has no BatchNorm (authors' code): a step at the battery's default 0.05 can kill
    # every ReLU of a deep 4x4 source in these tiny models; 0.01 is the quick profile's rate
    check_losses_and_gradients(model, SIZE, lr=0.01)
    # a fresh model with low thresholds, so that an untrained model returns boxes to check on
    model = build(name, input_size=SIZE, width=WIDTH)
    model.pixel_threshold, model.min_area = 0.0, 1
    check_eval_format(model, SIZE)
    check_autocast(model, SIZE)


@pytest.mark.parametrize("name", ["pixellink", "pixellink_pp"])
def test_deterministic(name: str) -> None:
    check_deterministic(name, SIZE, width=WIDTH, input_size=SIZE)


def _diff(a: torch.nn.Module, b: torch.nn.Module) -> set[str]:
    sa, sb = a.state_dict(), b.state_dict()
    return {
        k for k in sa.keys() | sb.keys() if k not in sa or k not in sb or sa[k].shape != sb[k].shape
    }


@pytest.mark.parametrize(
    ("name", "prefixes"),
    [
        ("pixellink_pp_no_phase_offsets", ("dc.offset_predictor.",)),
        ("pixellink_pp_no_dc", ("dc.",)),
        ("pixellink_pp_no_sa_base", ("sa_base.", "dc.")),  # DC loses its gate-map input
        ("pixellink_pp_no_sa_fusion", ("sa_fusion.",)),
        ("pixellink_pp_no_interphase", ("sa_base.", "sa_fusion.")),
        ("pixellink_gconv", ("sa_base.", "sa_fusion.", "dc.")),
    ],
)
def test_ablation_changes_only_named_parts(name: str, prefixes: tuple[str, ...]) -> None:
    full, ablated = build("pixellink_pp", width=WIDTH), build(name, width=WIDTH)
    diff = _diff(full, ablated)
    assert diff and all(k.startswith(prefixes) for k in diff), sorted(diff)[:5]
    for p in prefixes:  # every named part really changed
        assert any(k.startswith(p) for k in diff), p


def test_ablation_flags() -> None:
    def sas(m: torch.nn.Module) -> list[SelfAttention]:
        return [x for x in m.modules() if isinstance(x, SelfAttention)]

    pp = build("pixellink_pp", width=WIDTH)
    assert len(sas(pp)) == 8 and all(s.pool == 2 and s.groups == 1 for s in sas(pp))
    assert pp.dc.offset_groups == 4
    assert pp.dc.attention_channels == pp.trunk.channels["conv3_3"]  # sigma * Wo g, C channels
    assert build("pixellink_pp_no_phase_offsets", width=WIDTH).dc.offset_groups == 1
    assert not any(
        isinstance(x, DCModule) for x in build("pixellink_pp_no_dc", width=WIDTH).modules()
    )
    no_base = build("pixellink_pp_no_sa_base", width=WIDTH)
    assert no_base.sa_base is None and len(sas(no_base)) == 4
    assert no_base.dc.attention_channels == 0
    assert build("pixellink_pp_no_sa_fusion", width=WIDTH).sa_fusion is None
    assert all(s.groups == 4 for s in sas(build("pixellink_pp_no_interphase", width=WIDTH)))
    plain = build("pixellink", width=WIDTH)
    assert plain.trunk.groups == 1 and plain.fusion is None and not sas(plain)
    assert build("pixellink_gconv", width=WIDTH).trunk.groups == 4


def test_dc_learning_rate_group() -> None:
    pp = build("pixellink_pp", width=WIDTH)
    groups = pp.param_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-4)]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in pp.dc.parameters()}


# ---- targets and losses --------------------------------------------------------------------


def test_instance_map_rectangles_and_overlap() -> None:
    boxes = torch.tensor(
        [[8.0, 4.0, 24.0, 20.0], [20.0, 4.0, 32.0, 12.0], [41.0, 41.0, 42.0, 42.0]]
    )
    inst = instance_map(boxes, 16, 16, (4.0, 4.0))
    assert (inst[1:5, 2:5] == 1).all()  # box 1 minus the overlap with box 2
    assert (inst[1:3, 5] == 0).all()  # overlapping pixels are negative
    assert (inst[1:3, 6:8] == 2).all()
    assert inst[10, 10] == 3 and (inst == 3).sum() == 1  # a box smaller than a pixel keeps one
    assert (inst > 0).sum() == 12 + 2 + 4 + 1


def test_link_targets() -> None:
    inst = torch.zeros(5, 5, dtype=torch.long)
    inst[1:3, 1:3] = 1
    inst[1:3, 3] = 2
    links = link_targets(inst)
    right = NEIGHBOURS.index((0, 1))
    assert links[right, 1, 1] and not links[right, 1, 2]  # 1 -> 1 positive, 1 -> 2 negative
    assert not links[:, 0, 0].any()  # background pixels have no positive link
    assert links[:, 1, 1].sum() == 3  # right, down, down-right stay in instance 1


def test_pixel_loss_instance_balance_and_ohem() -> None:
    inst = torch.zeros(10, 10, dtype=torch.long)
    inst[0:2, 0:2] = 1  # 4 pixels
    inst[4:8, 4:8] = 2  # 16 pixels
    logits = torch.randn(2, 10, 10, generator=torch.Generator().manual_seed(0))
    loss, weight = _pixel_loss(logits, inst)
    s = 20
    assert weight[inst == 1].sum().item() == pytest.approx(s / 2)
    assert weight[inst == 2].sum().item() == pytest.approx(s / 2)
    ce = torch.nn.functional.cross_entropy(logits[None], (inst > 0).long()[None], reduction="none")[
        0
    ]
    hard = ce[inst == 0].topk(3 * s).values.sum()
    assert loss.item() == pytest.approx(((weight * ce).sum() + hard).item() / (4 * s), rel=1e-5)


def test_link_loss_is_zero_without_positives_and_balanced() -> None:
    inst = torch.zeros(6, 6, dtype=torch.long)
    logits = torch.randn(16, 6, 6, requires_grad=True)
    assert _link_loss(logits, inst, torch.zeros(6, 6)).item() == 0.0
    inst[1:4, 1:4] = 1
    _, weight = _pixel_loss(torch.zeros(2, 6, 6), inst)
    perfect = torch.where(link_targets(inst), 1.0, -1.0) * 20  # [8, H, W] positive-class margin
    logits = torch.stack([-perfect, perfect], 1).reshape(16, 6, 6)
    assert _link_loss(logits, inst, weight).item() < 1e-6


# ---- decoding on hand-made maps ----------------------------------------------------------


def _maps_from_instances(inst: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    pixel = np.where(inst.numpy() > 0, 0.9, 0.05).astype(np.float32)
    links = np.where(link_targets(inst).numpy(), 0.95, 0.05).astype(np.float32)
    return pixel, links


def test_decode_two_touching_boxes_split_by_negative_links() -> None:
    inst = torch.zeros(16, 16, dtype=torch.long)
    inst[2:6, 2:6] = 1
    inst[2:6, 6:10] = 2  # touches box 1 along a whole edge
    pixel, links = _maps_from_instances(inst)
    boxes, scores = decode(pixel, links, (4.0, 4.0))
    assert len(boxes) == 2
    got = sorted(map(tuple, boxes.tolist()))
    assert got == [(8.0, 8.0, 24.0, 24.0), (24.0, 8.0, 40.0, 24.0)]
    assert np.allclose(scores, 0.9)
    # the same pixels with positive links across the edge form one box
    merged = np.where(link_targets((inst > 0).long()).numpy(), 0.95, 0.05).astype(np.float32)
    boxes, _ = decode(pixel, merged, (4.0, 4.0))
    assert boxes.tolist() == [[8.0, 8.0, 40.0, 24.0]]


def test_decode_one_box_extent_and_score() -> None:
    box = torch.tensor([[12.0, 20.0, 44.0, 36.0]])
    inst = instance_map(box, 16, 16, (4.0, 4.0))
    pixel, links = _maps_from_instances(inst)
    pixel[inst.numpy() > 0] = np.linspace(0.6, 1.0, int((inst > 0).sum()))
    boxes, scores = decode(pixel, links, (4.0, 4.0))
    assert boxes.tolist() == [[12.0, 20.0, 44.0, 36.0]]
    assert scores[0] == pytest.approx(0.8)
    # min_area is in input pixels^2: a one-pixel component is 16 px^2 at stride 4 (kept, as in
    # the authors' code, where no component at the 1/4 scale is below 3 px^2) and 1 px^2 at
    # stride 1 (dropped); a 2 x 2 component at stride 1 (4 px^2) is kept
    pixel[:] = 0.0
    pixel[0, 0] = 0.9
    assert decode(pixel, links, (4.0, 4.0))[0].tolist() == [[0.0, 0.0, 4.0, 4.0]]
    assert len(decode(pixel, links, (1.0, 1.0))[0]) == 0
    pixel[10:12, 10:12] = 0.9
    joined = np.full_like(links, 0.95)
    assert decode(pixel, joined, (1.0, 1.0))[0].tolist() == [[10.0, 10.0, 12.0, 12.0]]
    assert len(decode(np.zeros_like(pixel), links, (4.0, 4.0))[0]) == 0


def test_decode_ten_thousand_pixels() -> None:
    rng = np.random.default_rng(0)
    pixel = np.zeros((128, 128), np.float32)
    pixel[10:110, 10:110] = rng.uniform(0.6, 1.0, (100, 100))  # 10^4 positive pixels
    links = rng.uniform(0, 1, (8, 128, 128)).astype(np.float32)
    boxes, scores = decode(pixel, links, (4.0, 4.0))
    assert len(boxes) > 1 and (np.diff(scores) <= 0).all()
    assert boxes[:, :2].min() >= 40 and boxes[:, 2:].max() <= 440


def test_decode_rejects_mismatched_maps() -> None:
    with pytest.raises(ValueError, match="link scores"):
        decode(np.zeros((8, 8)), np.zeros((8, 4, 4)), (4.0, 4.0))


def test_decode_thresholds_are_the_authors() -> None:
    """Pixel > 0.2 (the evaluation threshold), link > 0.8, min area 3 px^2, in every row."""
    assert (PIXEL_THRESHOLD, LINK_THRESHOLD, MIN_AREA) == (0.2, 0.8, 3.0)
    for name in ROWS + ABLATIONS:
        m = build(name, input_size=SIZE, width=WIDTH)
        assert (m.pixel_threshold, m.link_threshold, m.min_area) == (0.2, 0.8, 3.0), name
    pixel = np.zeros((8, 8), np.float32)
    pixel[2, 2:4] = 0.3  # between 0.2 and the former 0.5: detected
    pixel[6, 6] = 0.15  # below 0.2: not
    right = NEIGHBOURS.index((0, 1))
    links = np.zeros((8, 8, 8), np.float32)
    links[right, 2, 2] = 0.75  # below 0.8: the two pixels stay apart
    boxes, scores = decode(pixel, links, (4.0, 4.0))
    assert sorted(boxes.tolist()) == [[8.0, 8.0, 12.0, 12.0], [12.0, 8.0, 16.0, 12.0]]
    assert np.allclose(scores, 0.3)
    links[right, 2, 2] = 0.85  # above 0.8: joined
    assert decode(pixel, links, (4.0, 4.0))[0].tolist() == [[8.0, 8.0, 16.0, 12.0]]


def test_model_decodes_with_its_thresholds() -> None:
    """The model's eval path applies pixel 0.2 / link 0.8 to the softmax of its maps."""
    model = build("pixellink", input_size=SIZE, width=WIDTH).eval()
    h = SIZE // 4
    maps = torch.full((1, 18, h, h), 0.0)
    maps[:, 0] = 1.0  # background logit: lesion probability sigmoid(-1) = 0.27 > 0.2 ...
    maps[:, 0, 4:, :] = 2.0  # ... and sigmoid(-2) = 0.12 < 0.2 from row 4 down
    maps[:, 2::2] = 0.0
    maps[:, 3::2] = 2.0  # every link: sigmoid(2) = 0.88 > 0.8, all positive pixels joined
    out = model._detect(maps, (4.0, 4.0))[0]
    assert out["boxes"].tolist() == [[0.0, 0.0, float(SIZE), 16.0]]
    assert out["scores"].item() == pytest.approx(torch.sigmoid(torch.tensor(-1.0)).item())
    maps[:, 3::2] = 1.0  # sigmoid(1) = 0.73 < 0.8: no links, one box per pixel
    assert len(model._detect(maps, (4.0, 4.0))[0]["boxes"]) == 4 * h


@pytest.mark.parametrize("name", ROWS)
def test_trunk_without_batchnorm_and_fusion_without_relu(name: str) -> None:
    model = build(name, input_size=SIZE, width=WIDTH)
    trunk = list(model.trunk.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in trunk)
    convs = [m for m in trunk if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 15 and all(c.bias is not None for c in convs)
    for stage in model.trunk.stages.values():  # conv then ReLU, nothing in between
        layers = [m for m in stage.modules() if not isinstance(m, torch.nn.Sequential)]
        for a, b in zip(layers, layers[1:], strict=False):
            if isinstance(a, torch.nn.Conv2d):
                assert isinstance(b, torch.nn.ReLU)
    batchnorms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    if model.fusion is None:
        assert not batchnorms
    else:
        assert batchnorms and all(n.startswith("fusion.") for n in batchnorms)
        for branch in model.fusion.values():  # 1x1 conv + BN, no ReLU
            assert [type(m) for m in branch] == [torch.nn.Conv2d, torch.nn.BatchNorm2d]
    assert model.final_pixel.weight.shape == (2, 2, 1, 1)
    assert model.final_link.weight.shape == (16, 16, 1, 1)


def test_final_convs_map_the_summed_heads() -> None:
    torch.manual_seed(0)
    model = build("pixellink_gconv", input_size=SIZE, width=WIDTH).eval()
    images = torch.rand(1, 12, SIZE, SIZE)
    with torch.no_grad():
        model.final_pixel.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        model.final_link.weight.copy_(torch.eye(16).view(16, 16, 1, 1))
        summed = model.score_maps(images)  # identity finals: the top-down sum itself
        model.final_pixel.weight.mul_(2.0)
        model.final_pixel.bias.fill_(1.0)
        model.final_link.weight.copy_(torch.eye(16).flip(0).view(16, 16, 1, 1))
        maps = model.score_maps(images)
    torch.testing.assert_close(maps[:, :2], 2 * summed[:, :2] + 1)
    torch.testing.assert_close(maps[:, 2:], summed[:, 2:].flip(1))


def test_pixellink_pp_dc_starts_on_the_regular_grid() -> None:
    """SA@base hands DC sigma * Wo g: zero at init, so offsets 0 and mask 0.5 at the start."""
    torch.manual_seed(0)
    model = build("pixellink_pp", input_size=SIZE, width=WIDTH).eval()
    seen: list = []
    model.dc.register_forward_hook(lambda _m, args, _out: seen.append(args))
    model.score_maps(torch.rand(1, 12, SIZE, SIZE))
    feature, attention = seen[-1]
    assert attention.shape == feature.shape and attention.abs().max() == 0
    assert model.dc.last_offset.abs().max() == 0 and torch.all(model.dc.last_mask == 0.5)
    with torch.no_grad():
        model.sa_base["conv3_3"].sigma.fill_(1.0)
    model.score_maps(torch.rand(1, 12, SIZE, SIZE))
    assert seen[-1][1].abs().max() > 0
