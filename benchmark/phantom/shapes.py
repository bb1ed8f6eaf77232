"""Smoothly deformed ellipsoids and tapered tubes, evaluated at arbitrary points (mm).

Shapes are analytic, so a label map can be sampled at any (warped, sub-slice) position and
edges stay sharp whatever the motion. Points are flat float32 arrays ``qz, qy, qx``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

N_DEFORM = 8


@dataclass(frozen=True)
class Ellipsoid:
    """Ellipsoid with semi-axes ``axes`` (z, y, x), rotated by ``angle`` (rad) in the axial
    plane and deformed radially by low-order polynomials of the direction (``deform``)."""

    center: tuple[float, float, float]
    axes: tuple[float, float, float]
    angle: float = 0.0
    deform: tuple[float, ...] = (0.0,) * N_DEFORM

    @cached_property
    def bbox(self) -> np.ndarray:
        """Conservative ``[[zmin, ymin, xmin], [zmax, ymax, xmax]]``."""
        grow = 1.0 + float(np.sum(np.abs(self.deform)))
        r = max(self.axes[1], self.axes[2]) * grow
        half = np.array([self.axes[0] * grow, r, r])
        c = np.array(self.center)
        return np.stack([c - half, c + half])

    def radius(self, qz: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        """Normalised radius: < 1 inside, 1 on the surface."""
        cz, cy, cx = self.center
        az, ay, ax = self.axes
        dy, dx = qy - cy, qx - cx
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        uz = (qz - cz) / az
        uy = (cos * dy + sin * dx) / ay
        ux = (-sin * dy + cos * dx) / ax
        r = np.sqrt(uz * uz + uy * uy + ux * ux) + np.float32(1e-6)
        nz, ny, nx = uz / r, uy / r, ux / r
        c = self.deform
        shape = (
            1.0
            + c[0] * nx
            + c[1] * ny
            + c[2] * nz
            + c[3] * nx * ny
            + c[4] * (nx * nx - ny * ny)
            + c[5] * nz * nx
            + c[6] * nz * ny
            + c[7] * (nz * nz - 0.5 * (nx * nx + ny * ny))
        )
        return r / shape


@dataclass(frozen=True)
class Tube:
    """A vessel segment from ``a`` to ``b`` (z, y, x) with radius ``r0`` tapering to ``r1``."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    r0: float
    r1: float

    @cached_property
    def bbox(self) -> np.ndarray:
        r = max(self.r0, self.r1)
        pts = np.array([self.a, self.b])
        return np.stack([pts.min(0) - r, pts.max(0) + r])

    def inside(self, qz: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        a = np.asarray(self.a, np.float32)
        ab = np.asarray(self.b, np.float32) - a
        pz, py, px = qz - a[0], qy - a[1], qx - a[2]
        t = np.clip((pz * ab[0] + py * ab[1] + px * ab[2]) / float(ab @ ab), 0.0, 1.0)
        ez, ey, ex = pz - t * ab[0], py - t * ab[1], px - t * ab[2]
        radius = self.r0 + (self.r1 - self.r0) * t
        return ez * ez + ey * ey + ex * ex < radius * radius


def random_deform(rng: np.random.Generator, scale: float) -> tuple[float, ...]:
    """Deformation coefficients for :class:`Ellipsoid`: smooth, mild shape variation."""
    return tuple(float(v) for v in rng.normal(0.0, scale, N_DEFORM).clip(-2 * scale, 2 * scale))


def overlaps(bbox: np.ndarray, lo: Sequence[float], hi: Sequence[float]) -> bool:
    """Whether a shape's bbox meets the box ``[lo, hi]`` of a point set."""
    (z0, y0, x0), (z1, y1, x1) = bbox.tolist()
    return (
        z0 <= hi[0] and y0 <= hi[1] and x0 <= hi[2] and z1 >= lo[0] and y1 >= lo[1] and x1 >= lo[2]
    )


def in_box(bbox: np.ndarray, qz: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
    return (
        (qz >= bbox[0, 0])
        & (qz <= bbox[1, 0])
        & (qy >= bbox[0, 1])
        & (qy <= bbox[1, 1])
        & (qx >= bbox[0, 2])
        & (qx <= bbox[1, 2])
    )
