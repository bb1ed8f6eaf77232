"""The training loop (paper appendix B) with validation, best-checkpoint selection and resume.

Protocol: SGD (momentum 0.9, weight decay 5e-4, LR 1e-3) over the model's ``param_groups`` (so
deformable-convolution offsets keep their 0.1x LR for the whole schedule), batch 32, 60k
iterations, LR x0.1 at 30k and 50k, SSD augmentations, validation every 500 iterations. The
best checkpoint is the one with the highest **mean of the validation APs named in
``train.select_metrics``** (default IoU50 and IoBB50: the paper reports both, and the mean
rewards a detector that is good under either overlap definition).

Data order is a pure function of ``(seed, iteration)`` (:mod:`benchmark.sampler`), and each
sample's augmentation is drawn from ``(seed, draw, index)``. A resumed run therefore sees
exactly the batches an uninterrupted run sees; with the torch RNG state restored from the
checkpoint (:mod:`benchmark.checkpoints`) too, the weights on CPU are identical. Prediction and
the validation APs live in :mod:`benchmark.prediction`.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

import models
from benchmark.atomic import read_json
from benchmark.augment import SSDAugment
from benchmark.checkpoints import (
    BEST,
    CHECKPOINTS,
    LAST,
    load_checkpoint,
    restore_scheduler,
    save_checkpoint,
    scheduler_state,
)
from benchmark.cohort import open_variant
from benchmark.dataset import LesionSliceDataset, collate
from benchmark.outputs import save_csv, save_json
from benchmark.prediction import autocast, quick_metrics
from benchmark.run_folder import label as unit_label
from benchmark.sampler import IterationSampler
from benchmark.training_progress import ProgressDisplay, TrainingProgress

log = logging.getLogger(__name__)

ANCHORS = "anchors.json"
TRAIN_LOG = "train_log.csv"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says where and why."""


# ----------------------------------------------------------------------------- building


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def accepts(builder: Any, argument: str) -> bool:
    """Whether ``builder`` names ``argument`` explicitly (``**kwargs`` does not count)."""
    return argument in inspect.signature(builder).parameters


def model_overrides(config: dict[str, Any], run_dir: Path, train_set: LesionSliceDataset) -> dict:
    """Builder arguments: input size, width, profile overrides and (RetinaNet rows) anchors.

    Anchors are optimised once on the training boxes (at input size) and stored in
    ``anchors.json`` of the run folder, which a resumed run reads back.
    """
    mc = config["detector"]
    overrides = {"input_size": mc["input_size"], "width": mc["width"], **mc.get("overrides", {})}
    builder = models.info(config["model"]).builder
    if mc.get("optimise_anchors") and accepts(builder, "anchor_scales"):
        path = run_dir / ANCHORS
        if not path.exists():
            from models.anchor_opt import optimise_anchors

            scales, ratios = optimise_anchors(train_set.boxes(), seed=config["seed"])
            anchors = {"anchor_scales": list(scales), "anchor_ratios": list(ratios)}
            save_json(path, anchors, "optimised anchors")
        overrides.update(read_json(path))
    return overrides


def build_model(config: dict[str, Any], overrides: dict[str, Any]) -> models.Detector:
    torch.manual_seed(config["seed"])
    return models.build(config["model"], **overrides)


def datasets(config: dict[str, Any]) -> dict[str, LesionSliceDataset]:
    cohort = open_variant(config["cohort"], config["variant"])
    size, tc = config["detector"]["input_size"], config["train"]
    augment = SSDAugment(size, tc["expand_ratio"]) if tc["augment"] else None
    return {
        "train": LesionSliceDataset(cohort, "train", size, augment=augment, seed=config["seed"]),
        "val": LesionSliceDataset(cohort, "val", size),
        "test": LesionSliceDataset(cohort, "test", size),
    }


# ----------------------------------------------------------------------------- the loop


@dataclass
class Trained:
    """What training hands to evaluation: the model it built (on ``device``), the cohort's
    datasets (``train``, ``val``, ``test``) and the run's figures, so a unit opens its cohort
    and builds its model once."""

    run_dir: Path
    model: models.Detector
    device: torch.device
    amp: bool
    data: dict[str, LesionSliceDataset]
    iteration: int
    best_iteration: int
    best_score: float
    seconds: float
    images_per_second: float

    def best_model(self) -> models.Detector:
        """The model with the best checkpoint's weights (read from the run folder, where an
        earlier, killed process may have written it)."""
        self.model.load_state_dict(load_checkpoint(self.run_dir / CHECKPOINTS / BEST)["model"])
        return self.model


def train(
    config: dict[str, Any],
    run_dir: str | Path,
    stop_at: int | None = None,
    progress: ProgressDisplay | None = None,
) -> Trained:
    """Train one (model, variant, seed) unit into ``run_dir``; resumes from ``last.pt``.

    ``stop_at`` ends the loop early (after checkpointing) at that iteration, as a kill would.
    ``progress``: where to show iteration, loss, images/s and ETA (default: nowhere).
    Returns the model and datasets for evaluation, the iteration reached, the best
    checkpoint's iteration and validation score, and the training time and throughput.
    """
    run_dir = Path(run_dir)
    tc = config["train"]
    device = pick_device(tc["device"])
    amp = tc["amp"] == "bf16" and device.type == "cuda"
    channels_last = bool(tc["channels_last"]) and device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = datasets(config)
    model = build_model(config, model_overrides(config, run_dir, data["train"])).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = _optimiser(model, tc)
    ckpt_dir = run_dir / CHECKPOINTS
    state = _resume(ckpt_dir, model, optimizer, scheduler, device, config["seed"])

    total = tc["iterations"]
    stop = min(total, stop_at) if stop_at is not None else total
    loader = _loader(data["train"], tc, config["seed"], state["iteration"], stop, device)
    board = _tensorboard(run_dir)
    meter = None if progress is None else TrainingProgress(
        progress, unit_label(config), state["iteration"], stop, tc["log_every"])
    log_rows = [_renamed_losses(row) for row in state["log"]]
    it = state["iteration"]
    window = {"seconds": 0.0, "images": 0}
    tick = time.perf_counter()

    def clock() -> None:
        """Add the training time since the last call (validation and saving excluded)."""
        nonlocal tick
        if device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        state["seconds"] += now - tick
        window["seconds"] += now - tick
        tick = now

    model.train()
    for images, targets in loader:
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        targets = model.prepare_targets(
            [{k: v for k, v in t.items() if isinstance(v, torch.Tensor)} for t in targets]
        )
        with autocast(device, amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise TrainingError(
                f"{run_dir}: loss became {loss.item()} at iteration {it + 1} ({parts}); try a "
                f"lower train.lr (now {tc['lr']}) or train.grad_clip, and check the cohort's "
                "boxes; the last good checkpoint is kept"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if tc.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
        optimizer.step()
        scheduler.step()
        it += 1
        state["images"] += len(images)
        window["images"] += len(images)
        if it % tc["log_every"] == 0 or it == stop:
            clock()
            row = {
                "iteration": it,
                "loss": loss.item(),
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_second": window["images"] / max(window["seconds"], 1e-9),
            }
            row.update({loss_column(k): v.item() for k, v in losses.items()})
            log_rows.append(row)
            if meter:
                meter.step(it, row["loss"], row["images_per_second"])
            if board:
                for key, value in row.items():
                    if key != "iteration":
                        board.add_scalar(f"train/{key}", value, it)
            window = {"seconds": 0.0, "images": 0}
        elif meter:
            meter.step(it)
        if it % tc["val_every"] == 0 or it == total:
            clock()
            scores = quick_metrics(
                model, data["val"], device, tc["select_metrics"], config["eval"]["batch_size"], amp
            )
            model.train()
            score = float(np.mean(list(scores.values())))
            val_row = {f"val_{k}": v for k, v in scores.items()}
            log_rows.append({"iteration": it, **val_row, "val_score": score})
            if board:
                board.add_scalar("val/score", score, it)
            if score > state["best_score"]:
                state["best_score"], state["best_iteration"] = score, it
                best = {"model": model.state_dict(), "iteration": it, "score": score}
                save_checkpoint(ckpt_dir / BEST, best)
            tick = time.perf_counter()
        if it % tc["checkpoint_every"] == 0 or it == stop:
            clock()
            state["iteration"], state["log"] = it, log_rows
            _write_log(run_dir, log_rows)
            _save_last(ckpt_dir, model, optimizer, scheduler, device, state)
            tick = time.perf_counter()
    if board:
        board.close()
    if meter:
        meter.close()
    return Trained(
        run_dir=run_dir,
        model=model,
        device=device,
        amp=amp,
        data=data,
        iteration=it,
        best_iteration=state["best_iteration"],
        best_score=state["best_score"],
        seconds=state["seconds"],
        images_per_second=state["images"] / max(state["seconds"], 1e-9),
    )


def _optimiser(
    model: models.Detector, tc: dict[str, Any]
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.MultiStepLR]:
    """SGD over the model's parameter groups, LR steps at ``train.milestones``."""
    optimizer = torch.optim.SGD(
        model.param_groups(tc["lr"]),
        lr=tc["lr"],
        momentum=tc["momentum"],
        weight_decay=tc["weight_decay"],
    )
    return optimizer, torch.optim.lr_scheduler.MultiStepLR(optimizer, tc["milestones"], tc["gamma"])


def _resume(
    ckpt_dir: Path,
    model: models.Detector,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    seed: int,
) -> dict[str, Any]:
    """The loop's state: restored with weights, optimiser, schedule and RNG from ``last.pt``
    when there is one, else fresh (and the torch RNG seeded)."""
    state: dict[str, Any] = {
        "iteration": 0,
        "best_score": -math.inf,
        "best_iteration": 0,
        "log": [],
        "seconds": 0.0,
        "images": 0,
    }
    if not (ckpt_dir / LAST).exists():
        torch.manual_seed(seed)
        return state
    saved = load_checkpoint(ckpt_dir / LAST)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    restore_scheduler(scheduler, saved["scheduler"])
    torch.set_rng_state(saved["rng_torch"])
    if device.type == "cuda" and "rng_cuda" in saved:
        torch.cuda.set_rng_state_all(saved["rng_cuda"])
    state = {k: saved[k] for k in state}
    log.info("%s: resuming at iteration %d", ckpt_dir.parent, state["iteration"])
    return state


def _save_last(
    ckpt_dir: Path,
    model: models.Detector,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    state: dict[str, Any],
) -> None:
    """``last.pt``: everything :func:`_resume` needs to continue bit for bit."""
    rng = {"rng_torch": torch.get_rng_state()}
    if device.type == "cuda":
        rng["rng_cuda"] = torch.cuda.get_rng_state_all()
    save_checkpoint(
        ckpt_dir / LAST,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler_state(scheduler),
            **rng,
            **state,
        },
    )


def _loader(
    train_set: LesionSliceDataset,
    tc: dict[str, Any],
    seed: int,
    start: int,
    stop: int,
    device: torch.device,
) -> DataLoader:
    """Batches of iterations ``start .. stop-1`` in their fixed order (:mod:`benchmark.sampler`)."""
    return DataLoader(
        train_set,
        batch_sampler=IterationSampler(len(train_set), tc["batch_size"], seed, start, stop),
        collate_fn=collate,
        num_workers=tc["workers"],
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )


def loss_column(term: str) -> str:
    """The log column of a loss term: ``loss_classifier`` for a model's ``loss_classifier``
    (torchvision's naming), ``loss_heat`` for ``heat``."""
    return term if term.startswith("loss_") else f"loss_{term}"


def _renamed_losses(row: dict[str, Any]) -> dict[str, Any]:
    """A log row saved before :func:`loss_column` (``loss_loss_conf``), as it is named now."""
    return {k.removeprefix("loss_") if k.startswith("loss_loss_") else k: v
            for k, v in row.items()}


def _write_log(run_dir: Path, rows: list[dict]) -> None:
    save_csv(run_dir / TRAIN_LOG, pd.DataFrame(rows), "training log")


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
