"""The training loop (paper appendix B) with validation, best-checkpoint selection and resume.

Protocol: SGD (momentum 0.9, weight decay 5e-4, LR 1e-3) over the model's ``param_groups`` (so
deformable-convolution offsets keep their 0.1x LR for the whole schedule), batch 32, 60k
iterations, LR x0.1 at 30k and 50k, SSD augmentations, validation every 500 iterations. The
best checkpoint is the one with the highest **mean of the validation APs named in
``train.select_metrics``** (default IoU50 and IoBB50: the paper reports both, and the mean
rewards a detector that is good under either overlap definition).

Data order is a pure function of ``(seed, iteration)``: the batch of iteration ``i`` holds the
samples ``i*B .. i*B+B-1`` of a stream of per-epoch permutations drawn from ``(seed, epoch)``,
and each sample's augmentation is drawn from ``(seed, draw, index)``. A resumed run therefore
sees exactly the batches an uninterrupted run sees; with the torch RNG state restored too, the
weights on CPU are identical.

Checkpoints hold only tensors and plain containers, written atomically, and are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler

import models
from benchmark.atomic import read_json
from benchmark.augment import SSDAugment
from benchmark.cohort import open_variant
from benchmark.dataset import LesionSliceDataset, collate
from benchmark.evaluation import evaluate_frame
from benchmark.outputs import save_csv, save_json, save_torch
from benchmark.run_folder import label as unit_label
from benchmark.training_progress import ProgressDisplay, TrainingProgress

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
ANCHORS = "anchors.json"
TRAIN_LOG = "train_log.csv"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the message says where and why."""


# ----------------------------------------------------------------------------- data order


def batch_keys(n: int, batch: int, seed: int, iteration: int) -> list[tuple[int, int]]:
    """``(index, draw)`` keys of the batch at ``iteration`` (0-based); deterministic."""
    keys = []
    for draw in range(iteration * batch, (iteration + 1) * batch):
        epoch, pos = divmod(draw, n)
        perm = _permutation(n, seed, epoch)
        keys.append((int(perm[pos]), draw))
    return keys


_perm_cache: dict[tuple[int, int, int], np.ndarray] = {}


def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    if key not in _perm_cache:
        if len(_perm_cache) > 8:
            _perm_cache.clear()
        _perm_cache[key] = np.random.default_rng((seed, epoch, 0xDA7A)).permutation(n)
    return _perm_cache[key]


class IterationSampler(Sampler[list[tuple[int, int]]]):
    """Batch sampler yielding the keys of iterations ``start .. stop-1``."""

    def __init__(self, n: int, batch: int, seed: int, start: int, stop: int):
        self.n, self.batch, self.seed, self.start, self.stop = n, batch, seed, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for it in range(self.start, self.stop):
            yield batch_keys(self.n, self.batch, self.seed, it)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


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


# ----------------------------------------------------------------------------- checkpoints


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


def _scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    state = scheduler.state_dict()
    state["milestones"] = dict(state["milestones"])  # Counter is not weights_only-loadable
    return state


def _restore_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, state: dict) -> None:
    state = dict(state)
    state["milestones"] = Counter(state["milestones"])
    scheduler.load_state_dict(state)


# ----------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict(
    model: models.Detector,
    dataset: LesionSliceDataset,
    device: torch.device,
    batch_size: int = 16,
    amp: bool = False,
) -> pd.DataFrame:
    """Ground truth and detections of every item, in native slice pixels (predictions CSV)."""
    model.eval()
    rows = []
    for start in range(0, len(dataset), batch_size):
        indices = range(start, min(start + batch_size, len(dataset)))
        images, _ = collate([dataset[i] for i in indices])
        with _autocast(device, amp):
            outputs = model(images.to(device))
        for i, out in zip(indices, outputs, strict=True):
            ref = dataset.items[i]
            h, w = dataset.raw_shape(i)
            scale = (
                np.array([w, h, w, h], np.float64) / dataset.input_size if dataset.input_size else 1
            )
            for box in ref.boxes:
                rows.append((ref.patient, ref.slice, "gt", *map(float, box), float("nan")))
            boxes = out["boxes"].float().cpu().numpy().reshape(-1, 4) * scale
            for box, score in zip(boxes, out["scores"].float().cpu().numpy(), strict=True):
                rows.append((ref.patient, ref.slice, "det", *map(float, box), float(score)))
    return pd.DataFrame(rows, columns=["patient", "slice", "kind", "x0", "y0", "x1", "y1", "score"])


def quick_metrics(model, dataset, device, keys, batch_size=16, amp=False) -> dict[str, float]:
    """Validation APs (no bootstrap) used to pick the best checkpoint."""
    frame = predict(model, dataset, device, batch_size, amp)
    metrics = evaluate_frame(frame)
    return {k: metrics[k] for k in keys}


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------- the loop


def train(
    config: dict[str, Any],
    run_dir: str | Path,
    stop_at: int | None = None,
    progress: ProgressDisplay | None = None,
) -> dict[str, Any]:
    """Train one (model, variant, seed) unit into ``run_dir``; resumes from ``last.pt``.

    ``stop_at`` ends the loop early (after checkpointing) at that iteration, as a kill would.
    ``progress``: where to show iteration, loss, images/s and ETA (default: nowhere).
    Returns ``best_iteration``, ``best_score``, ``images_per_second``, ``seconds``, ``iteration``.
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
    optimizer = torch.optim.SGD(
        model.param_groups(tc["lr"]),
        lr=tc["lr"],
        momentum=tc["momentum"],
        weight_decay=tc["weight_decay"],
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, tc["milestones"], tc["gamma"])
    ckpt_dir = run_dir / CHECKPOINTS
    state = {
        "iteration": 0,
        "best_score": -math.inf,
        "best_iteration": 0,
        "log": [],
        "seconds": 0.0,
        "images": 0,
    }
    if (ckpt_dir / LAST).exists():
        saved = load_checkpoint(ckpt_dir / LAST)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        _restore_scheduler(scheduler, saved["scheduler"])
        torch.set_rng_state(saved["rng_torch"])
        if device.type == "cuda" and "rng_cuda" in saved:
            torch.cuda.set_rng_state_all(saved["rng_cuda"])
        state = {k: saved[k] for k in state}
        log.info("%s: resuming at iteration %d", run_dir, state["iteration"])
    else:
        torch.manual_seed(config["seed"])

    total = tc["iterations"]
    stop = min(total, stop_at) if stop_at is not None else total
    train_set = data["train"]
    loader = DataLoader(
        train_set,
        batch_sampler=IterationSampler(
            len(train_set), tc["batch_size"], config["seed"], state["iteration"], stop
        ),
        collate_fn=collate,
        num_workers=tc["workers"],
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
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
        with _autocast(device, amp):
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
            rng = {"rng_torch": torch.get_rng_state()}
            if device.type == "cuda":
                rng["rng_cuda"] = torch.cuda.get_rng_state_all()
            save_checkpoint(
                ckpt_dir / LAST,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": _scheduler_state(scheduler),
                    **rng,
                    **state,
                },
            )
            tick = time.perf_counter()
    if board:
        board.close()
    if meter:
        meter.close()
    state["iteration"] = it
    return {
        "iteration": it,
        "best_iteration": state["best_iteration"],
        "best_score": state["best_score"],
        "seconds": state["seconds"],
        "images_per_second": state["images"] / max(state["seconds"], 1e-9),
    }


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
