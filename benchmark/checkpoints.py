"""Training checkpoints: tensors and plain containers only, written atomically and read with
``torch.load(weights_only=True)``."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import torch

from benchmark.outputs import save_torch

CHECKPOINTS = "checkpoints"
"""The checkpoint folder of a run folder."""
LAST, BEST = "last.pt", "best.pt"
"""The checkpoint to resume from and the one with the best validation score."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` atomically; a full disk ends with a message naming the file, the old
    file intact (a rerun resumes from it)."""
    save_torch(path, state, "checkpoint")


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: checkpoint missing; rerun training for this run folder (delete the folder "
            "to start over)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: damaged checkpoint ({err}); delete it to retrain") from None


def scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    state = scheduler.state_dict()
    state["milestones"] = dict(state["milestones"])  # Counter is not weights_only-loadable
    return state


def restore_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> None:
    state = dict(state)
    state["milestones"] = Counter(state["milestones"])
    scheduler.load_state_dict(state)
