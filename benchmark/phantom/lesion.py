"""The HCC: size drawn like the paper's cohort, placed inside the liver, with its architecture
(capsule, necrotic centre, mosaic nodules) as sub-labels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmark.phantom.enhancement import ENHANCEMENT_PATTERNS, Tissue
from benchmark.phantom.shapes import Ellipsoid, in_box, random_deform

DIAMETER_CM = (4.3, 2.7, 1.0, 16.0)
"""Paper cohort: mean, SD, min, max lesion diameter (cm)."""

PointTest = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""``f(qz, qy, qx) -> bool array``: whether points (mm) satisfy a condition."""

CAPSULE_RATE = 0.8
MOSAIC_RATE = 0.35


@dataclass(frozen=True)
class Lesion:
    """A deformed sphere with optional capsule rim, necrotic core and mosaic nodules."""

    shape: Ellipsoid
    pattern: str
    capsule_mm: float  # 0: no capsule
    necrosis: float  # core radius as a fraction of the lesion radius; 0: none
    mosaic: tuple[tuple[float, float, float, float], ...]  # plane waves (kz, ky, kx, phase)

    @property
    def diameter_mm(self) -> float:
        return 2.0 * float(np.mean(self.shape.axes))

    def labels(self, qz: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        """Lesion tissue codes at flat points; 0 outside the lesion."""
        out = np.zeros(qz.shape, np.uint8)
        idx = np.nonzero(in_box(self.shape.bbox, qz, qy, qx))[0]
        if idx.size == 0:
            return out
        z, y, x = qz[idx], qy[idx], qx[idx]
        r = self.shape.radius(z, y, x)
        tissue = np.full(idx.shape, Tissue.LESION, np.uint8)
        if self.mosaic:
            cz, cy, cx = self.shape.center
            field = sum(
                np.cos(kz * (z - cz) + ky * (y - cy) + kx * (x - cx) + ph)
                for kz, ky, kx, ph in self.mosaic
            )
            tissue[field > 0.3] = Tissue.LESION_NODULE
        if self.necrosis > 0:
            tissue[r < self.necrosis] = Tissue.NECROSIS
        if self.capsule_mm > 0:
            tissue[r > 1.0 - self.capsule_mm / (0.5 * self.diameter_mm)] = Tissue.CAPSULE
        tissue[r >= 1.0] = 0
        out[idx] = tissue
        return out


def draw_diameter_mm(rng: np.random.Generator) -> float:
    """Diameter like the paper's cohort: 4.3 +- 2.7 cm within 1-16 cm.

    A log-normal with that mean and SD (lesion sizes are right-skewed; a normal would put 6 %
    of lesions below 0 cm), clipped to 1-16 cm (about 1.5 % of draws are clipped).
    """
    mean, sd, low, high = DIAMETER_CM
    sigma2 = np.log1p((sd / mean) ** 2)
    value = rng.lognormal(np.log(mean) - sigma2 / 2, np.sqrt(sigma2))
    return 10.0 * float(np.clip(value, low, high))


def draw_lesion(
    rng: np.random.Generator,
    inside_liver: PointTest,
    z_range: tuple[float, float],
    liver_box: np.ndarray,
    min_mm: float = 10.0,
) -> tuple[Lesion, float]:
    """Draw an HCC that fits in the liver and in the imaged slab ``z_range``.

    ``inside_liver(qz, qy, qx) -> bool array`` tests points. The drawn diameter is kept when a
    centre is found whose surrounding sphere lies in the liver; otherwise it is reduced in 15 %
    steps: the phantom liver (~15 x 17 x 18 cm) cannot hold the paper's largest lesions. With
    the default geometry about a fifth of lesions are reduced, giving ~4.1 +- 1.9 cm (max
    ~9 cm) instead of the drawn 4.3 +- 2.7 cm. Diameters below ``min_mm`` are raised to it
    (callers pass 9 pixels so that on coarse grids the lesion survives the paper's mask
    smoothing and yields a box); at ``min_mm`` a lesion may stick out of the liver a little.
    Returns the lesion and the diameter originally drawn (mm).
    """
    drawn = draw_diameter_mm(rng)
    floor = max(10.0, min_mm)
    pattern = str(rng.choice(list(ENHANCEMENT_PATTERNS), p=list(ENHANCEMENT_PATTERNS.values())))
    directions = rng.normal(size=(64, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    shell = np.concatenate([directions, 0.6 * directions])
    diameter = max(drawn, floor)
    center = None
    while center is None:
        radius = 0.5 * diameter
        z_lo, z_hi = z_range
        margin = min(0.6 * radius, 0.25 * (z_hi - z_lo))
        cand = rng.uniform(liver_box[0], liver_box[1], size=(400, 3))
        cand[:, 0] = rng.uniform(z_lo + margin, z_hi - margin, 400)
        best, best_inside = None, 0.0
        for c in cand[inside_liver(cand[:, 0], cand[:, 1], cand[:, 2])]:
            pts = c + radius * 1.1 * shell
            inside = float(inside_liver(pts[:, 0], pts[:, 1], pts[:, 2]).mean())
            if inside > best_inside:
                best, best_inside = c, inside
            if inside == 1.0:
                break
        if best_inside == 1.0 or (diameter <= floor and best_inside >= 0.5):
            center = best  # at the smallest size allowed, a partly exophytic lesion is accepted
        elif diameter <= floor:
            raise RuntimeError(f"cannot place a {floor:.0f} mm lesion in the liver")
        else:
            diameter = max(floor, 0.85 * diameter)
    radius = 0.5 * diameter
    factors = rng.uniform(0.92, 1.08, 3)
    axes = tuple(radius * float(f) for f in factors / factors.mean())
    necrosis_rate = float(np.clip(0.1 + 0.08 * (diameter / 10.0 - 3.0), 0.05, 0.6))
    mosaic = ()
    if diameter >= 20.0 and rng.uniform() < MOSAIC_RATE:
        k = 2 * np.pi / rng.uniform(0.4, 0.7) / radius
        waves = rng.normal(size=(3, 3))
        waves = k * waves / np.linalg.norm(waves, axis=1, keepdims=True)
        mosaic = tuple(
            (float(a), float(b), float(c), float(rng.uniform(0, 2 * np.pi))) for a, b, c in waves
        )
    lesion = Lesion(
        shape=Ellipsoid(
            tuple(float(v) for v in center),
            axes,
            float(rng.uniform(0, np.pi)),
            random_deform(rng, 0.05),
        ),
        pattern=pattern,
        capsule_mm=float(rng.uniform(1.0, 2.5)) if rng.uniform() < CAPSULE_RATE else 0.0,
        necrosis=float(rng.uniform(0.3, 0.5)) if rng.uniform() < necrosis_rate else 0.0,
        mosaic=mosaic,
    )
    return lesion, drawn
