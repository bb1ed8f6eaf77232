"""The common test battery for a registered detector (shapes, losses, gradients, eval, seeds)."""

from __future__ import annotations

import torch

import models
from models.base import IN_CHANNELS, Detector, Supervision


def batch(size: int, seed: int = 0) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Two images with bright lesions: two boxes (one tiny) in the first, none in the second."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(2, IN_CHANNELS, size, size, generator=g) * 0.3
    boxes = [
        torch.tensor([[0.15, 0.2, 0.5, 0.55], [0.6, 0.62, 0.66, 0.7]]) * size,
        torch.zeros((0, 4)),
    ]
    targets = []
    for i, b in enumerate(boxes):
        mask = torch.zeros(size, size, dtype=torch.uint8)
        for x0, y0, x1, y1 in b.round().long().tolist():
            images[i, :, y0:y1, x0:x1] += 0.5
            mask[y0:y1, x0:x1] = 1
        targets.append({"boxes": b, "labels": torch.ones(len(b), dtype=torch.long), "masks": mask})
    return images, targets


def build(name: str, seed: int = 0, **kw) -> Detector:
    torch.manual_seed(seed)
    return models.build(name, **kw)


Batch = tuple[torch.Tensor, list[dict[str, torch.Tensor]]]


def train_losses(model: Detector, size: int, data: Batch | None = None) -> dict[str, torch.Tensor]:
    images, targets = data or batch(size)
    model.train()
    return model(images, targets)


def check_losses_and_gradients(
    model: Detector, size: int, lr: float = 0.05, data: Batch | None = None
) -> None:
    """Finite scalar losses; after one SGD step at ``lr`` (zero-initialised gates open) every
    parameter gets a finite, non-zero gradient. ``data``: a batch of the family's own (e.g.
    boxes at every scale, so that every prior source of an SSD matches), default :func:`batch`."""
    losses = train_losses(model, size, data)
    assert losses, "no losses"
    for key, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), (key, value)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    sum(losses.values()).backward()
    opt.step()
    opt.zero_grad()
    sum(train_losses(model, size, data).values()).backward()
    dead = [
        n
        for n, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]
    assert not dead, f"parameters without gradient: {dead}"


def check_eval_format(model: Detector, size: int, require_boxes: bool = True) -> None:
    images, _ = batch(size)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, list) and len(out) == 2
    for det in out:
        assert set(det) >= {"boxes", "scores"}
        boxes, scores = det["boxes"], det["scores"]
        assert boxes.dtype == torch.float32 and scores.dtype == torch.float32
        assert boxes.dim() == 2 and boxes.shape[1] == 4 and scores.shape == (len(boxes),)
        assert ((scores >= 0) & (scores <= 1)).all()
        assert (scores[:-1] >= scores[1:]).all(), "scores not sorted descending"
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert (boxes >= 0).all() and (boxes <= size).all()
    if require_boxes:
        assert len(out[0]["boxes"]) > 0


def check_deterministic(name: str, size: int, **kw) -> None:
    a, b = build(name, seed=3, **kw), build(name, seed=3, **kw)
    for (ka, pa), (kb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(pa, pb), ka
    la, lb = train_losses(a, size), train_losses(b, size)
    assert {k: v.item() for k, v in la.items()} == {k: v.item() for k, v in lb.items()}


def check_interface(model: Detector, size: int, masks: bool) -> None:
    assert model.input_size == size
    assert Supervision.BOXES in model.supervision
    assert (Supervision.MASKS in model.supervision) == masks
    groups = model.param_groups(1e-3)
    n_grouped = sum(len(g["params"]) for g in groups)
    assert n_grouped == sum(1 for p in model.parameters() if p.requires_grad)


def check_autocast(model: Detector, size: int) -> None:
    """Under bf16 autocast (the runner's GPU mode) losses and detections stay float32."""
    images, targets = batch(size)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.train()(images, targets)
        with torch.no_grad():
            out = model.eval()(images)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), losses
    assert all(d["boxes"].dtype == torch.float32 for d in out)
