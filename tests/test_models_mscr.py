"""MSCR baseline: battery, per-phase streams, phase recurrence, scale-insensitive assignment."""

from __future__ import annotations

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
from models.mscr import _centres

SIZE, WIDTH = 64, 0.25


def test_registered_and_described_as_rebuilt() -> None:
    info = models.info("mscr")
    assert info.paper_row == "MSCR [17]" and info.table == "I"
    assert "not available" in info.description


def test_battery() -> None:
    model = build("mscr", input_size=SIZE, width=WIDTH)
    check_interface(model, SIZE, masks=False)
    check_losses_and_gradients(model, SIZE)
    check_eval_format(model, SIZE)
    check_autocast(model, SIZE)


def test_deterministic() -> None:
    check_deterministic("mscr", SIZE, input_size=SIZE, width=WIDTH)


def test_streams_are_separate_per_phase() -> None:
    """Changing one phase's channels changes only that phase's stream features."""
    model = build("mscr", input_size=SIZE, width=WIDTH).eval()
    x = torch.rand(1, 12, SIZE, SIZE)
    y = x.clone()
    y[:, 3:6] = torch.rand(1, 3, SIZE, SIZE)  # arterial phase only
    with torch.no_grad():
        fx, fy = model.stage2(model.stage1(x)), model.stage2(model.stage1(y))
    per_phase = fx.shape[1] // 4
    changed = (fx - fy).abs().flatten(2).amax(2)[0].view(4, per_phase).amax(1)
    assert changed[1] > 0 and changed[[0, 2, 3]].abs().max() == 0


def test_phase_order_matters() -> None:
    """The ConvGRU reads the phases as a sequence: swapping two phases changes the output."""
    model = build("mscr", input_size=SIZE, width=WIDTH).eval()
    x = torch.rand(1, 12, SIZE, SIZE)
    swapped = torch.cat([x[:, 3:6], x[:, 0:3], x[:, 6:]], 1)
    with torch.no_grad():
        assert not torch.allclose(model._maps(x)[0], model._maps(swapped)[0])


def test_assignment_weights_every_box_equally() -> None:
    model = build("mscr", input_size=SIZE, width=WIDTH)
    centres = _centres(16, 16, torch.device("cpu"))
    boxes = torch.tensor([[4.0, 4.0, 40.0, 36.0], [50.0, 50.0, 51.0, 51.0], [8.0, 8.0, 16.0, 16.0]])
    match, weight = model._assign(boxes, centres)
    for i in range(3):  # large, tiny (no centre inside) and nested boxes all get weight 1
        assert (match == i).any()
        assert weight[match == i].sum().item() == pytest.approx(1.0)
    # the nested small box wins the locations it shares with the large one
    inside_small = (
        (centres[:, 0] > 8) & (centres[:, 0] < 16) & (centres[:, 1] > 8) & (centres[:, 1] < 16)
    )
    assert (match[inside_small] == 2).all()
    empty_match, empty_weight = model._assign(torch.zeros(0, 4), centres)
    assert (empty_match == -1).all() and empty_weight.sum() == 0
