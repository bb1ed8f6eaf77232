"""SSD family, SA and DC modules, deformable conv, priors and MultiBox loss (CPU, small sizes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
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
from models.box_coder import decode, encode, point_form
from models.deform import DCModule, interleave_phases, modulated_deform_conv2d
from models.multibox import detect, match, multibox_loss
from models.priors import SSD300_FEATURE_SIZES, ssd_priors
from models.ssd import PORTAL_CHANNELS, SSDDetector
from models.vgg import VGGTrunk

SIZE, WIDTH = 64, 0.125


ABLATIONS = [
    "gssd_pp_no_phase_offsets",
    "gssd_pp_no_dc",
    "gssd_pp_no_sa_base",
    "gssd_pp_no_sa_fusion",
    "gssd_pp_no_interphase",
]


def small(name: str, **kw) -> SSDDetector:
    return models.build(name, **{"input_size": SIZE, "width": WIDTH, **kw})


def batch(b: int = 2, size: int = SIZE, seed: int = 0) -> tuple[torch.Tensor, list[dict]]:
    """Random images and boxes of every scale, so that priors of all six sources match."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 12, size, size, generator=g)
    relative = [
        [
            [0.08, 0.10, 0.30, 0.28],
            [0.0, 0.0, 0.55, 0.55],
            [0.05, 0.05, 0.95, 0.97],
            [0.50, 0.55, 0.80, 0.85],
        ],
        [
            [0.30, 0.30, 0.72, 0.68],
            [0.05, 0.10, 0.80, 0.85],
            [0.60, 0.10, 0.80, 0.25],
            [0.10, 0.20, 0.75, 0.85],
        ],
    ]
    targets = [
        {"boxes": torch.tensor(r) * size, "labels": torch.ones(len(r), dtype=torch.long)}
        for r in relative[:b]
    ]
    return images, targets


# ---------------------------------------------------------------- priors, coder, matching


def test_ssd300_priors_are_standard():
    priors = ssd_priors(SSD300_FEATURE_SIZES, 300)
    assert priors.shape == (8732, 4)
    # first cell of conv4_3: centre 0.5 * 8 / 300, min size 30/300, sqrt(30*60)/300
    torch.testing.assert_close(priors[0], torch.tensor([4 / 300, 4 / 300, 0.1, 0.1]))
    torch.testing.assert_close(priors[1, 2], torch.tensor((30 * 60) ** 0.5 / 300))
    # last cell (1x1 map, k=4): min square, sqrt(min*max) square, ratio 2 and 1/2 (w clipped)
    assert priors[-3, 2].item() == pytest.approx((264 * 315) ** 0.5 / 300)
    assert priors[-2, 2].item() == pytest.approx(1.0)  # 264 * sqrt(2) / 300 > 1, clipped
    assert priors.min() >= 0 and priors.max() <= 1


@pytest.mark.parametrize("name", ["ssd", "gssd", "gssd_pp"])
def test_full_size_prior_count_and_maps(name):
    net = models.build(name, width=0.0625)
    assert net.input_size == 300
    assert net.feature_sizes == list(SSD300_FEATURE_SIZES)
    assert net.priors.shape == (8732, 4)


def test_encode_decode_roundtrip():
    priors = ssd_priors(SSD300_FEATURE_SIZES, 300)[:50]
    boxes = point_form(priors) * 0.9 + 0.03
    torch.testing.assert_close(decode(encode(boxes, priors), priors), boxes)


def test_match_threshold_and_best_prior_per_gt():
    priors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.1, 0.1]])
    gt = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.48, 0.48, 0.53, 0.53]])  # second: tiny box
    _, labels = match(gt, priors)
    # prior 0 matches gt 0 with IoU 1; prior 2 (IoU 0.25 < 0.5) is forced: best prior of gt 1
    assert labels.tolist() == [1, 0, 1]
    _, empty = match(torch.zeros((0, 4)), priors)
    assert empty.sum() == 0


def test_hard_negative_mining_ratio():
    priors = ssd_priors([8, 4, 2, 1, 1, 1], 64)
    loc = torch.zeros(1, len(priors), 4)
    conf = torch.zeros(1, len(priors), 2, requires_grad=True)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]])}]
    losses = multibox_loss(loc, conf, priors, targets, 64)
    losses["loss_conf"].backward()
    _, labels = match(targets[0]["boxes"] / 64, priors)
    used = (conf.grad.abs().sum(-1) > 0).sum().item()
    assert used == 4 * labels.sum().item()  # positives + 3x as many negatives
    assert losses["loss_conf"].item() == pytest.approx(
        used * torch.log(torch.tensor(2.0)).item() / labels.sum().item()
    )


# ---------------------------------------------------------------- deformable conv and DC


@pytest.mark.parametrize(
    "og,groups,stride,pad,dil",
    [(4, 4, 1, 1, 1), (1, 4, 1, 1, 1), (4, 1, 2, 1, 1), (2, 1, 1, 2, 2), (2, 4, 1, 0, 1)],
)
def test_deform_conv_matches_torchvision_float64(og, groups, stride, pad, dil):
    g = torch.Generator().manual_seed(og * 10 + groups)
    b, c, h, w, o = 2, 8, 7, 9, 12
    x = torch.randn(b, c, h, w, dtype=torch.float64, generator=g)
    weight = torch.randn(o, c // groups, 3, 3, dtype=torch.float64, generator=g)
    bias = torch.randn(o, dtype=torch.float64, generator=g)
    ho = (h + 2 * pad - 2 * dil - 1) // stride + 1
    wo = (w + 2 * pad - 2 * dil - 1) // stride + 1
    offset = 2.5 * torch.randn(b, 2 * og * 9, ho, wo, dtype=torch.float64, generator=g)
    mask = torch.rand(b, og * 9, ho, wo, dtype=torch.float64, generator=g)
    inputs = [t.requires_grad_() for t in (x, offset, weight, bias, mask)]

    def rel(a, r):
        return ((a - r).norm() / r.norm()).item()

    ours = modulated_deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, pad, dil, mask)
    assert rel(ours, ref) < 1e-10
    g_ours = torch.autograd.grad((ours * ref.detach()).sum(), inputs)
    g_ref = torch.autograd.grad((ref * ref.detach()).sum(), inputs)
    for a, r in zip(g_ours, g_ref, strict=True):
        assert rel(a, r) < 1e-10


def test_dc_module_is_conv_on_regular_grid():
    torch.manual_seed(0)
    dc = DCModule(8, 4, phases=4).double()
    x, attention = torch.randn(2, 8, 6, 6).double(), torch.randn(2, 4, 6, 6).double()
    inp = interleave_phases(x, attention, 4)
    w, b = dc.dconv.weight, dc.dconv.bias
    plain = F.conv2d(inp, w, b, padding=1, groups=4)
    zero_offset = torch.zeros(2, 2 * 4 * 9, 6, 6, dtype=torch.float64)
    ones = torch.ones(2, 4 * 9, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(dc.dconv(inp, zero_offset, ones), plain, rtol=1e-12, atol=1e-12)
    # at init the zero predictor gives offsets 0 and mask sigmoid(0) = 0.5
    at_init = F.conv2d(inp, 0.5 * w, b, padding=1, groups=4)
    torch.testing.assert_close(dc(x, attention), at_init, rtol=1e-12, atol=1e-12)
    assert dc.last_offset.abs().max() == 0


def _dc_inputs(net) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Record the (feature, attention) pairs every forward hands to ``net.dc``."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    net.dc.register_forward_hook(lambda _m, args, _out: seen.append(args))
    return seen


def test_gssd_pp_dc_reads_the_gated_sa_map():
    """DC input = [feature, sigma * Wo g] per phase (C + C channels), zero map at init."""
    torch.manual_seed(0)
    net = small("gssd_pp").eval()
    c = net.source_channels[0]
    assert net.dc.attention_channels == c and net.dc.offset_predictor.in_channels == 2 * c
    seen = _dc_inputs(net)
    sa_out: list = []
    net.sa_base[0].register_forward_hook(lambda _m, args, out: sa_out.append((args[0], *out)))
    images, _ = batch(1)
    net.head_outputs(images)
    (feature, attention), (x, y, gated) = seen[-1], sa_out[-1]
    assert attention is gated and feature is y
    assert attention.shape[1] == c and attention.abs().max() == 0  # sigma = 0 at init
    assert net.dc.last_offset.abs().max() == 0 and torch.all(net.dc.last_mask == 0.5)
    # the offset predictor sees the attention map: weights on the attention channels only
    with torch.no_grad():
        w = net.dc.offset_predictor.weight.view(-1, 4, 2, c // 4, 3, 3)  # [out, phase, x|a, ...]
        w[:, :, 1].normal_(0, 0.1)
    net.head_outputs(images)
    assert net.dc.last_offset.abs().max() == 0  # attention still zero: offsets stay zero
    with torch.no_grad():
        net.sa_base[0].sigma.fill_(0.5)
    net.head_outputs(images)
    (feature, attention), (x, y, gated) = seen[-1], sa_out[-1]
    torch.testing.assert_close(attention, y - x)
    assert attention.abs().max() > 0 and net.dc.last_offset.abs().max() > 0


def test_dc_op_choice_gives_the_same_model():
    torch.manual_seed(0)
    ours = small("gssd_pp").eval()
    ref = small("gssd_pp", dc_op="torchvision").eval()
    ref.load_state_dict(ours.state_dict())
    with torch.no_grad():  # move the offsets off the regular grid (the SA map is 0 at init)
        ours.dc.offset_predictor.weight.normal_(0, 0.05)
        ours.dc.offset_predictor.bias.normal_(0, 1.0)
    ref.load_state_dict(ours.state_dict())
    images, _ = batch(1)
    a, b = ours.head_outputs(images), ref.head_outputs(images)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert ours.dc.last_offset.abs().max() > 0.1
    with pytest.raises(ValueError, match="op must be one of"):
        small("gssd_pp", dc_op="nope")


def test_interleave_phases_order():
    x = torch.arange(8.0).view(1, 8, 1, 1)
    g = 100 + torch.arange(4.0).view(1, 4, 1, 1)
    assert interleave_phases(x, g, 4).flatten().tolist() == [
        0,
        1,
        100,
        2,
        3,
        101,
        4,
        5,
        102,
        6,
        7,
        103,
    ]


# ---------------------------------------------------------------- SA


@pytest.mark.parametrize("groups,pool", [(1, 1), (4, 2)])
def test_sa_with_sigma_zero_is_identity(groups, pool):
    torch.manual_seed(0)
    sa = SelfAttention(32, pool=pool, groups=groups)
    x = torch.randn(2, 32, 7, 7)
    y, gated = sa(x, return_gated=True)
    assert torch.equal(y, x)
    assert gated.shape == (2, 32, 7, 7) and gated.abs().max() == 0  # C channels, zero at init


@pytest.mark.parametrize("size", [6, 7])
def test_sa_follows_the_paper_equations(size):
    """beta = softmax_i(q^T k) without scaling, keys/values pooled by D to floor(N/D) per side
    (authors' code), y = x + sigma Wo g; the map handed to DC is sigma Wo g."""
    torch.manual_seed(0)
    sa = SelfAttention(16, pool=2).eval()
    with torch.no_grad():
        sa.sigma.fill_(0.7)
    x = torch.randn(1, 16, size, size, dtype=torch.float32)
    y, gated = sa(x, return_gated=True)
    q = sa.query(x).flatten(2)[0]  # [C/8, N]
    if size % 2 == 0:
        pooled = F.avg_pool2d(x, 2)
    else:  # 7 -> 3 per side: windows [0, 3), [2, 5), [4, 7) (adaptive pooling)
        pooled = torch.stack(
            [
                torch.stack([x[..., a : a + 3, b : b + 3].mean((-2, -1)) for b in (0, 2, 4)], -1)
                for a in (0, 2, 4)
            ],
            -2,
        )
    k, v = sa.key(pooled).flatten(2)[0], sa.value(pooled).flatten(2)[0]  # [C/8, M], [C/2, M]
    beta = torch.softmax(q.T @ k, dim=1)  # [N, M]: each location over the pooled locations
    g = (v @ beta.T).view(1, 8, size, size)
    torch.testing.assert_close(gated, 0.7 * sa.out(g), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y, x + 0.7 * sa.out(g), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups,exchanges", [(1, True), (4, False)])
def test_sa_interphase_exchange(groups, exchanges):
    torch.manual_seed(0)
    sa = SelfAttention(32, groups=groups).eval()
    with torch.no_grad():
        sa.sigma.fill_(1.0)
    x = torch.randn(1, 32, 5, 5)
    x2 = x.clone()
    x2[:, :8] += torch.randn(1, 8, 5, 5)  # change phase 1 only
    changed = (sa(x2)[:, 8:] - sa(x)[:, 8:]).abs().max() > 1e-6
    assert bool(changed) == exchanges


# ---------------------------------------------------------------- detectors


@pytest.mark.parametrize("size", [64, 96, 160])
def test_priors_follow_network_maps(size):
    net = small("gssd_pp", input_size=size).eval()
    loc, conf = net.head_outputs(torch.rand(1, 12, size, size))
    assert loc.shape == (1, len(net.priors), 4) and conf.shape == (1, len(net.priors), 2)
    trunk_sizes = net.trunk.feature_sizes(size)
    x = net.trunk(torch.rand(1, 12, size, size))
    assert [x[k].shape[-1] for k in ("conv4_3", "fc7")] == [
        trunk_sizes["conv4_3"],
        trunk_sizes["fc7"],
    ]


# 96 px: the last maps are 2x2 (at 1x1 with batch 2, BatchNorm's output is +-1 whatever its
# input, which blocks the gradient of the layer before it)
BATTERY_SIZE = 96


@pytest.mark.parametrize("name", ["ssd", "gssd", "gssd_portal", "gssd_pp", *ABLATIONS])
def test_battery(name):
    model = build(name, input_size=BATTERY_SIZE, width=WIDTH)
    check_interface(model, BATTERY_SIZE, masks=False)
    # boxes at every scale, so that the priors of all six sources match
    check_losses_and_gradients(model, BATTERY_SIZE, data=batch(size=BATTERY_SIZE))
    if name == "gssd_pp":  # the zero-initialised SA gates and DC offsets moved off zero
        assert all(sa.sigma.item() != 0 for sa in [*model.sa_base, *model.sa_fusion])
        assert model.dc.offset_predictor.weight.abs().sum() > 0
    model = build(name, input_size=BATTERY_SIZE, width=WIDTH)
    check_eval_format(model, BATTERY_SIZE)
    check_autocast(model, BATTERY_SIZE)


def test_deterministic():
    check_deterministic("gssd_pp", SIZE, input_size=SIZE, width=WIDTH)


def test_eval_keeps_top_k_above_the_confidence_threshold():
    net = small("gssd_pp", top_k=50, conf_threshold=0.02).eval()
    images, _ = batch()
    with torch.no_grad():
        out = net(images)
    for det in out:
        assert 0 < len(det["boxes"]) <= 50 and det["scores"].min() > 0.02


def test_bad_input_shape_is_a_clear_error():
    net = small("gssd")
    with pytest.raises(ValueError, match=r"expected images \[B, 12, 64, 64\]"):
        net(torch.rand(1, 3, SIZE, SIZE))


def test_dc_parameters_at_tenth_learning_rate():
    net = small("gssd_pp")
    groups = net.param_groups(1e-3)
    dc = [g for g in groups if g.get("name") == "dc"]
    assert len(dc) == 1 and dc[0]["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in dc[0]["params"]} == {id(p) for p in net.dc.parameters()}
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in net.parameters())
    assert len(small("gssd").param_groups(1e-3)) == 1


def _shapes(net) -> dict[str, tuple]:
    return {n: tuple(p.shape) for n, p in net.named_parameters()}


@pytest.mark.parametrize(
    "name,removed,reshaped",
    [
        ("gssd_pp_no_phase_offsets", (), ("dc.offset_predictor.",)),
        ("gssd_pp_no_dc", ("dc.",), ()),
        # the DC module has no gate map to read once SA@base is gone: its input narrows
        ("gssd_pp_no_sa_base", ("sa_base.",), ("dc.offset_predictor.", "dc.dconv.")),
        ("gssd_pp_no_sa_fusion", ("sa_fusion.",), ()),
        ("gssd_pp_no_interphase", (), ("sa_base.", "sa_fusion.")),
    ],
)
def test_each_ablation_changes_only_what_it_names(name, removed, reshaped):
    full, abl = _shapes(small("gssd_pp")), _shapes(small(name))
    gone = set(full) - set(abl)
    assert not set(abl) - set(full)
    assert {n for n in full if n.startswith(removed)} == gone if removed else not gone
    if removed:
        assert gone
    diff = {n for n in abl if abl[n] != full[n]}
    assert all(n.startswith(reshaped) for n in diff)
    assert bool(diff) == bool(reshaped)
    if name == "gssd_pp_no_interphase":  # every SA conv shrinks 4x (grouped), sigma stays
        assert all(
            n.endswith("sigma") or n.endswith("bias") or n in diff
            for n in abl
            if n.startswith(("sa_base.", "sa_fusion."))
        )


def test_models_without_modules_have_none():
    names = {n for n, _ in small("gssd").named_parameters()}
    assert not any(n.startswith(("sa_", "dc.")) for n in names)
    assert any(n.startswith("fusion.") for n in names)
    assert not any(n.startswith("fusion.") for n, _ in small("ssd").named_parameters())


def test_gssd_portal_ignores_other_phases():
    torch.manual_seed(0)
    net = small("gssd_portal").eval()
    assert PORTAL_CHANNELS == (6, 7, 8) and net.trunk.groups == 4
    images, _ = batch(1)
    other = images.clone()
    keep = torch.zeros(12, dtype=torch.bool)
    keep[list(PORTAL_CHANNELS)] = True
    other[:, ~keep] = torch.rand_like(other[:, ~keep])
    a, b = net.head_outputs(images), net.head_outputs(other)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    portal_changed = images.clone()
    portal_changed[:, 7] = 1 - portal_changed[:, 7]
    assert not torch.equal(net.head_outputs(portal_changed)[1], a[1])


def test_gssd_portal_is_gssd_fed_the_portal_phase_in_every_group():
    torch.manual_seed(0)
    portal, gssd = small("gssd_portal").eval(), small("gssd").eval()
    assert _shapes(portal) == _shapes(gssd)  # the same network, the same capacity
    with torch.device("meta"):  # full width, shapes only
        full = [
            sum(p.numel() for p in models.build(n).parameters()) for n in ("gssd_portal", "gssd")
        ]
    assert full[0] == full[1]
    gssd.load_state_dict(portal.state_dict())
    images, _ = batch(1)
    replicated = images[:, list(PORTAL_CHANNELS) * 4]  # portal z-1, z, z+1 in all four phases
    a, b = portal.head_outputs(images), gssd.head_outputs(replicated)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(gssd.head_outputs(images)[1], a[1])


def test_gssd_groups_keep_phases_apart_in_the_trunk():
    torch.manual_seed(0)
    trunk = VGGTrunk(12, groups=4, width=0.125).eval()
    x = torch.rand(1, 12, 32, 32)
    x2 = x.clone()
    x2[:, :3] = torch.rand(1, 3, 32, 32)  # precontrast only
    a, b = trunk(x)["fc7"], trunk(x2)["fc7"]
    quarter = a.shape[1] // 4
    assert torch.equal(a[:, quarter:], b[:, quarter:]) and not torch.equal(
        a[:, :quarter], b[:, :quarter]
    )


def test_deform_conv_under_bf16_autocast():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 9)
    offset = 2 * torch.randn(2, 2 * 4 * 9, 9, 9)
    mask = torch.rand(2, 4 * 9, 9, 9)
    weight = torch.randn(8, 4, 3, 3)
    ref = torchvision.ops.deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = modulated_deform_conv2d(x, offset, weight, None, 1, 1, 1, mask)
    assert out.dtype == torch.bfloat16
    assert ((out.float() - ref).norm() / ref.norm()).item() < 2e-2


def test_speed_script_runs_on_cpu(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "model_speed.py"
    spec = importlib.util.spec_from_file_location("model_speed", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "speed.json"
    args = ["--device", "cpu", "--batch", "2", "--size", "64", "--width", "0.125", "--steps", "1"]
    assert (
        script.main([*args, "--warmup", "0", "--models", "gssd", "gssd_pp", "--json", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "model  gssd_pp" in printed and "(torchvision, fp32)" in printed
    result = json.loads(out.read_text())
    timed = result["models"]
    assert timed["gssd_pp"]["ratio_to_baseline"] == pytest.approx(
        timed["gssd_pp"]["median_ms"] / timed["gssd"]["median_ms"]
    )
    assert len(result["modules"]) == 5 and result["config"]["threads"] == 1


def test_images_without_boxes_train():
    net = small("gssd").train()
    images, targets = batch()
    targets[1] = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}
    losses = net(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.long)}] * 2
    losses = net(images, empty)
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()  # no positives: zero loss, still differentiable


def test_gssd_pp_overfits_one_batch():
    """Matching, encoding, loss and decoding agree: a few steps on one batch find every box."""
    torch.manual_seed(0)
    net = small("gssd_pp", input_size=96).train()
    images, targets = batch(size=96)
    opt = torch.optim.SGD(net.param_groups(1e-2), lr=1e-2, momentum=0.9)
    for _ in range(30):
        opt.zero_grad()
        sum(net(images, targets).values()).backward()
        opt.step()
    with torch.no_grad():  # BatchNorm on batch statistics: 30 steps do not settle running stats
        loc, conf = net.head_outputs(images)
    for det, target in zip(detect(loc, conf, net.priors, 96), targets, strict=True):
        confident = det["boxes"][det["scores"] > 0.5]
        assert torchvision.ops.box_iou(target["boxes"], confident).max(1).values.min() > 0.5
