"""The interface every detector follows."""

from __future__ import annotations

from enum import Enum
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

NUM_PHASES = 4
SLICES_PER_PHASE = 3
IN_CHANNELS = NUM_PHASES * SLICES_PER_PHASE  # phase-major: [pre z-1,z,z+1, art ..., por ..., del ...]


class Supervision(str, Enum):
    """What a detector needs from the dataset in training."""

    BOXES = "boxes"
    MASKS = "masks"


class Detector(nn.Module):
    """Base class of all detectors.

    ``forward(images, targets)``:
      * ``images``: float tensor ``[B, 12, H, W]`` in [0, 1], ``H == W == input_size``;
      * training (``self.training``): ``targets`` is a list of ``B`` dicts with ``"boxes"``
        (float ``[N, 4]``, ``x0, y0, x1, y1`` in input pixels), ``"labels"`` (int64 ``[N]``, all 1)
        and, for models whose ``supervision`` includes masks, ``"masks"`` (uint8 ``[H, W]``).
        Returns a dict of scalar losses; the trainer sums them.
      * eval: returns a list of ``B`` dicts with ``"boxes"`` ``[K, 4]`` (input pixels) and
        ``"scores"`` ``[K]`` (lesion confidence in [0, 1]), sorted by descending score.

    Subclasses set ``input_size`` and ``supervision`` and may override ``param_groups`` (e.g.
    a lower learning rate for deformable-convolution parameters).
    """

    input_size: int = 300
    supervision: frozenset[Supervision] = frozenset({Supervision.BOXES})

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; the default is one group at ``lr``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def prepare_targets(self, targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """Hook for models that need targets on the model's device (default: move them)."""
        device = next(self.parameters()).device
        return [{k: v.to(device) for k, v in t.items()} for t in targets]

    @staticmethod
    def empty_detections(device: torch.device) -> dict[str, Tensor]:
        return {"boxes": torch.zeros((0, 4), device=device), "scores": torch.zeros((0,), device=device)}
