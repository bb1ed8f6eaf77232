"""SSD data augmentation for the 12-channel 2.5D input (paper appendix B, authors' protocol).

Photometric distortion (brightness +-32/255 with p=.5, contrast x U(0.5, 1.5) with p=.5),
expand (canvas ratio U(1, 1.5), p=.5), SSD random crop (min-IoU modes), horizontal mirror
(p=.5), then resize to the model's input size. Every step acts identically on all 12 channels,
on the boxes and on the lesion mask. All randomness comes from the ``rng`` passed in, so the
caller controls reproducibility (the dataset derives it from ``(seed, draw, index)``).

Differences from the original SSD recipe, for CT: the expand canvas is filled with 0 (the
clipped HU floor, i.e. air/fat outside the body) instead of the ImageNet mean, and intensities
are clipped back to [0, 1] after the photometric step.

Speed: images may be uint8 (0..255 for [0, 1], what the dataset caches) or float32. On uint8
the whole pipeline stays uint8 until the caller converts: the photometric step is a 256-entry
lookup table (its result rounded to 1/255, far below CT noise), expand/crop/mirror are index
operations and the resize is OpenCV's bilinear one (as in the SSD code the authors built on),
so one 512 px sample costs a few milliseconds and data loading keeps up with a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_MODES = (None, 0.1, 0.3, 0.7, 0.9, -1.0)  # None = keep the image; -1 = any crop
CROP_TRIALS = 50


@dataclass
class Sample:
    """Image ``[C, H, W]`` (uint8 0..255 or float32 0..1), boxes ``[N, 4]`` (x0, y0, x1, y1), mask."""

    image: np.ndarray
    boxes: np.ndarray
    mask: np.ndarray


def resize(sample: Sample, size: int) -> Sample:
    """Bilinear resize to ``size x size``; boxes scaled alike, mask by nearest neighbour."""
    _, h, w = sample.image.shape
    if (h, w) == (size, size):
        return sample
    image = np.stack(
        [cv2.resize(ch, (size, size), interpolation=cv2.INTER_LINEAR) for ch in sample.image]
    )
    mask = cv2.resize(sample.mask, (size, size), interpolation=cv2.INTER_NEAREST_EXACT)
    scale = np.array([size / w, size / h, size / w, size / h], dtype=np.float32)
    return Sample(image, sample.boxes * scale, mask)


def photometric(sample: Sample, rng: np.random.Generator) -> Sample:
    """Brightness +-32/255 (p=.5) then contrast x U(0.5, 1.5) (p=.5), clipped to [0, 1]."""
    shift = rng.uniform(-32, 32) / 255 if rng.random() < 0.5 else 0.0
    gain = rng.uniform(0.5, 1.5) if rng.random() < 0.5 else 1.0
    if shift == 0.0 and gain == 1.0:
        return sample
    image = sample.image
    if image.dtype == np.uint8:
        lut = np.clip((np.arange(256) / 255 + shift) * gain, 0, 1)
        table = np.rint(lut * 255).astype(np.uint8)
        flat = cv2.LUT(image.reshape(-1, image.shape[-1]), table)
        return Sample(flat.reshape(image.shape), sample.boxes, sample.mask)
    image = np.clip((image + np.float32(shift)) * np.float32(gain), 0.0, 1.0)
    return Sample(image.astype(np.float32), sample.boxes, sample.mask)


def expand(sample: Sample, rng: np.random.Generator, max_ratio: float = 1.5) -> Sample:
    if rng.random() >= 0.5:
        return sample
    c, h, w = sample.image.shape
    ratio = rng.uniform(1.0, max_ratio)
    new_h, new_w = int(h * ratio), int(w * ratio)
    top, left = int(rng.uniform(0, new_h - h)), int(rng.uniform(0, new_w - w))
    image = np.zeros((c, new_h, new_w), dtype=sample.image.dtype)
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
    image = np.ascontiguousarray(sample.image[:, :, ::-1])
    return Sample(image, boxes, np.ascontiguousarray(sample.mask[:, ::-1]))


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
