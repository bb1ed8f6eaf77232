"""SSD data augmentation for the 12-channel 2.5D input (paper appendix B, authors' protocol).

Photometric distortion (brightness +-32/255 with p=.5, contrast x U(0.5, 1.5) with p=.5),
expand (canvas ratio U(1, 1.5), p=.5), SSD random crop (min-IoU modes), horizontal mirror
(p=.5), then resize to the model's input size. Every step acts identically on all 12 channels,
on the boxes and on the lesion mask. All randomness comes from the ``rng`` passed in, so the
caller controls reproducibility (the dataset derives it from ``(seed, draw, index)``).

Differences from the original SSD recipe, for CT: the expand canvas is filled with 0 (the
clipped HU floor, i.e. air/fat outside the body) instead of the ImageNet mean, and intensities
are clipped back to [0, 1] after the photometric step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CROP_MODES = (None, 0.1, 0.3, 0.7, 0.9, -1.0)  # None = keep the image; -1 = any crop
CROP_TRIALS = 50


@dataclass
class Sample:
    """An image ``[C, H, W]`` float32 in [0, 1], boxes ``[N, 4]`` (x0, y0, x1, y1), mask ``[H, W]``."""

    image: np.ndarray
    boxes: np.ndarray
    mask: np.ndarray


def resize(sample: Sample, size: int) -> Sample:
    """Resize to ``size x size``; boxes scaled by the same factors, mask by nearest neighbour."""
    _, h, w = sample.image.shape
    if (h, w) == (size, size):
        return sample
    img = torch.from_numpy(np.ascontiguousarray(sample.image))[None]
    img = F.interpolate(
        img, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    mask = torch.from_numpy(np.ascontiguousarray(sample.mask))[None, None].float()
    mask = F.interpolate(mask, size=(size, size), mode="nearest-exact")
    scale = np.array([size / w, size / h, size / w, size / h], dtype=np.float32)
    return Sample(img[0].numpy(), sample.boxes * scale, mask[0, 0].to(torch.uint8).numpy())


def photometric(sample: Sample, rng: np.random.Generator) -> Sample:
    image = sample.image
    if rng.random() < 0.5:
        image = image + np.float32(rng.uniform(-32, 32) / 255)
    if rng.random() < 0.5:
        image = image * np.float32(rng.uniform(0.5, 1.5))
    return Sample(np.clip(image, 0.0, 1.0).astype(np.float32), sample.boxes, sample.mask)


def expand(sample: Sample, rng: np.random.Generator, max_ratio: float = 1.5) -> Sample:
    if rng.random() >= 0.5:
        return sample
    c, h, w = sample.image.shape
    ratio = rng.uniform(1.0, max_ratio)
    new_h, new_w = int(h * ratio), int(w * ratio)
    top, left = int(rng.uniform(0, new_h - h)), int(rng.uniform(0, new_w - w))
    image = np.zeros((c, new_h, new_w), dtype=np.float32)
    image[:, top : top + h, left : left + w] = sample.image
    mask = np.zeros((new_h, new_w), dtype=sample.mask.dtype)
    mask[top : top + h, left : left + w] = sample.mask
    boxes = sample.boxes + np.array([left, top, left, top], dtype=np.float32)
    return Sample(image, boxes, mask)


def _iou(boxes: np.ndarray, rect: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(boxes[:, 2], rect[2]) - np.maximum(boxes[:, 0], rect[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], rect[3]) - np.maximum(boxes[:, 1], rect[1]), 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + (rect[2] - rect[0]) * (rect[3] - rect[1]) - inter)


def random_crop(sample: Sample, rng: np.random.Generator) -> Sample:
    """SSD's min-IoU random crop; boxes whose centres fall outside the crop are dropped."""
    _, h, w = sample.image.shape
    boxes = sample.boxes
    if len(boxes) == 0:
        return sample
    while True:
        mode = CROP_MODES[rng.integers(len(CROP_MODES))]
        if mode is None:
            return sample
        for _ in range(CROP_TRIALS):
            cw, ch = rng.uniform(0.3 * w, w), rng.uniform(0.3 * h, h)
            if not 0.5 <= ch / cw <= 2:
                continue
            left, top = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
            rect = np.array([left, top, left + cw, top + ch]).astype(int)
            if _iou(boxes, rect).min() < mode:
                continue
            centres = (boxes[:, :2] + boxes[:, 2:]) / 2
            inside = (
                (centres[:, 0] > rect[0])
                & (centres[:, 1] > rect[1])
                & (centres[:, 0] < rect[2])
                & (centres[:, 1] < rect[3])
            )
            if not inside.any():
                continue
            kept = boxes[inside].copy()
            kept[:, :2] = np.maximum(kept[:, :2], rect[:2]) - rect[:2]
            kept[:, 2:] = np.minimum(kept[:, 2:], rect[2:]) - rect[:2]
            image = sample.image[:, rect[1] : rect[3], rect[0] : rect[2]]
            mask = sample.mask[rect[1] : rect[3], rect[0] : rect[2]]
            return Sample(np.ascontiguousarray(image), kept.astype(np.float32), mask.copy())


def mirror(sample: Sample, rng: np.random.Generator) -> Sample:
    if rng.random() >= 0.5:
        return sample
    w = sample.image.shape[2]
    boxes = sample.boxes.copy()
    boxes[:, [0, 2]] = w - sample.boxes[:, [2, 0]]
    return Sample(sample.image[:, :, ::-1].copy(), boxes, sample.mask[:, ::-1].copy())


class SSDAugment:
    """The full SSD training pipeline ending in a resize to ``size``."""

    def __init__(self, size: int, expand_ratio: float = 1.5):
        self.size = size
        self.expand_ratio = expand_ratio

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        sample = photometric(sample, rng)
        sample = expand(sample, rng, self.expand_ratio)
        sample = random_crop(sample, rng)
        sample = mirror(sample, rng)
        return resize(sample, self.size)
