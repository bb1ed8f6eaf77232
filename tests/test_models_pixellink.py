"""PixelLink, PixelLink + G.Conv & C.Fusion, PixelLink++ and its ablations; decoding on hand-made maps."""

from __future__ import annotations

import time

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
from models.pixellink_decode import NEIGHBOURS, decode, instance_map, link_targets

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
    check_losses_and_gradients(model, SIZE)
    # low thresholds so that an untrained model returns boxes to check the format on
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
    # one-pixel components are dropped; an empty map gives no boxes
    pixel[:] = 0.0
    pixel[0, 0] = 0.9
    assert len(decode(pixel, links, (4.0, 4.0))[0]) == 0


def test_decode_ten_thousand_pixels_is_fast() -> None:
    rng = np.random.default_rng(0)
    pixel = np.zeros((128, 128), np.float32)
    pixel[10:110, 10:110] = rng.uniform(0.6, 1.0, (100, 100))  # 10^4 positive pixels
    links = rng.uniform(0, 1, (8, 128, 128)).astype(np.float32)
    decode(pixel, links, (4.0, 4.0))  # warm-up (imports, allocations)
    start = time.perf_counter()
    boxes, scores = decode(pixel, links, (4.0, 4.0))
    assert time.perf_counter() - start < 0.25
    assert len(boxes) > 1 and (np.diff(scores) <= 0).all()


def test_decode_rejects_mismatched_maps() -> None:
    with pytest.raises(ValueError, match="link scores"):
        decode(np.zeros((8, 8)), np.zeros((8, 4, 4)), (4.0, 4.0))


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
