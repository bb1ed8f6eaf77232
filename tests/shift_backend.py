"""A fast stand-in for elastix in executor tests: in-plane translation by phase correlation."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from registration.backends import SliceRegistration


class ShiftBackend:
    """Registration backend (``registration.backends.Backend``) estimating one translation."""

    name = "test-shift"
    reuses_affine = False

    def register(
        self, fixed: np.ndarray, moving: np.ndarray, spacing: tuple[float, float], method: str,
        initial: list[dict[str, list[str]]] | None = None,
    ) -> SliceRegistration:
        (dx, dy), _ = cv2.phaseCorrelate(fixed.astype(np.float64), moving.astype(np.float64))
        shift = np.array([dy, dx])  # moving shows fixed's anatomy moved by +shift pixels
        warped = ndimage.shift(moving, -shift, order=1, mode="nearest").astype(np.float32)
        return SliceRegistration(warped, (shift, spacing, moving.shape))

    def warp_mask(self, mask: np.ndarray, reg: SliceRegistration) -> np.ndarray:
        return ndimage.shift(mask, -reg.transform[0], order=0, mode="constant")

    def transform_maps(self, reg: SliceRegistration) -> list[dict[str, list[str]]]:
        (dy, dx), (sy, sx), _ = reg.transform
        return [{"Transform": ["TranslationTransform"],
                 "TransformParameters": [f"{dx * sx}", f"{dy * sy}"]}]  # mm, elastix's x, y

    def displacement(self, reg: SliceRegistration) -> np.ndarray:
        shift, spacing, shape = reg.transform
        field = np.empty((*shape, 2), np.float32)
        field[..., 0], field[..., 1] = shift[0] * spacing[0], shift[1] * spacing[1]
        return field
