"""A detector's predictions over a dataset (the predictions CSV) and the quick validation APs
that pick the best checkpoint."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch

import models
from benchmark.dataset import LesionSliceDataset, collate
from benchmark.evaluation import evaluate_frame


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
        with autocast(device, amp):
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


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
