"""Lesion mask -> bounding boxes, as the paper did (used by the dataset and registration)."""

from __future__ import annotations

import cv2
import numpy as np

BLUR_KERNEL = 11
MORPH_KERNEL = np.ones((5, 5), np.uint8)


def smooth_mask(mask: np.ndarray) -> np.ndarray:
    """The paper's post-annotation filter: 11x11 Gaussian blur, re-threshold, open + close."""
    blurred = cv2.GaussianBlur((mask > 0).astype(np.float32), (BLUR_KERNEL, BLUR_KERNEL), 0)
    binary = (blurred >= 0.5).astype(np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, MORPH_KERNEL)
    return cv2.morphologyEx(binary, cv2.MORPH_CLOSE, MORPH_KERNEL)


def mask_to_boxes(mask: np.ndarray, *, smooth: bool = True) -> np.ndarray:
    """One box per connected lesion component of a 2D mask.

    Returns float32 ``[N, 4]`` boxes ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive,
    sorted by ``(y0, x0)``. With ``smooth`` the paper's filter is applied first.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask_to_boxes expects a 2D mask, got shape {mask.shape}")
    binary = smooth_mask(mask) if smooth else (mask > 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append((x, y, x + w, y + h))
    boxes.sort(key=lambda b: (b[1], b[0]))
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
