"""Random abdomen at the liver level, as analytic shapes in patient coordinates (mm).

Coordinates are LPS-like: ``x`` to the patient's left, ``y`` posterior, ``z`` superior; in-plane
``(0, 0)`` is the centre of the field of view and ``z = 0`` the centre of the liver.

The body wall (skin, subcutaneous fat, muscle), the spine, the paraspinal muscles and the ribs
are *static*: they stay put between breath-holds. Everything inside the wall (the *cavity*:
liver, vessels, spleen, kidneys, stomach, bowel, lung bases) is *visceral* and is sampled at
displaced positions, so organs slide along the wall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion

from benchmark.phantom.enhancement import Tissue
from benchmark.phantom.lesion import Lesion
from benchmark.phantom.shapes import Ellipsoid, Tube, in_box, overlaps, random_deform

RIB_PERIOD_MM = 32.0
RIB_HEIGHT_MM = 13.0


@dataclass(frozen=True)
class Wall:
    """Superelliptic body outline with fat and muscle layers (z-invariant)."""

    cy: float
    bx: float
    by: float
    power: float
    fat: float
    muscle: float
    harmonics: tuple[float, ...]

    def _radius(self, y: np.ndarray, x: np.ndarray, shrink: float) -> np.ndarray:
        dy, dx = y - self.cy, x
        theta = np.arctan2(dy, dx)
        h = self.harmonics
        wobble = 1.0 + h[0] * np.cos(2 * theta + h[1]) + h[2] * np.cos(3 * theta + h[3])
        ax, ay = self.bx - shrink, self.by - shrink
        r = (np.abs(dx / ax) ** self.power + np.abs(dy / ay) ** self.power) ** (1.0 / self.power)
        return r / wobble

    def body(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self._radius(y, x, 0.0) < 1.0

    def muscle_outer(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self._radius(y, x, self.fat) < 1.0

    def inner(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return self._radius(y, x, self.fat + self.muscle) < 1.0

    @property
    def cavity_axes(self) -> tuple[float, float]:
        return self.bx - self.fat - self.muscle, self.by - self.fat - self.muscle


@dataclass(frozen=True)
class Anatomy:
    """One patient's anatomy: static wall and spine, visceral organs, vessels and the HCC."""

    wall: Wall
    spine_y: float
    vertebra_r: float
    ribs: tuple[tuple[float, float], ...]  # (angle rad, z phase mm)
    dome: tuple[float, float, float, float]  # z_top, curvature, x, y of the right dome apex
    liver: tuple[Ellipsoid, ...]
    gallbladder: Ellipsoid
    spleen: Ellipsoid
    kidneys: tuple[Ellipsoid, ...]
    stomach: Ellipsoid
    stomach_level: float
    bowel: tuple[tuple[Ellipsoid, bool], ...]  # (loop, contains air)
    aorta: tuple[float, float, float]  # y, x, radius
    ivc: tuple[float, float, float, float, float]  # y, x, ry, rx, z_top
    portal_veins: tuple[Tube, ...]
    hepatic_veins: tuple[Tube, ...]
    lesion: Lesion | None = None

    # ------------------------------------------------------------------ static parts

    def static_labels(
        self, z: np.ndarray, y: np.ndarray, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels of the static tissues on the grid ``z[:, None, None], y[:, None], x[None]``.

        Returns ``(labels [Z, Y, X] uint8, cavity [Y, X] bool)``; ``cavity`` marks where the
        visceral (moving) anatomy is shown instead.
        """
        return self.static_labels_at(z, *np.meshgrid(y, x, indexing="ij"))

    def static_labels_at(
        self, z: np.ndarray, yy: np.ndarray, xx: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`static_labels` at in-plane points ``(yy, xx)`` ``[Y, X]`` (mm) of every slice
        ``z`` (e.g. a rigidly moved grid)."""
        plane = np.full(yy.shape, Tissue.AIR, np.uint8)
        plane[self.wall.body(yy, xx)] = Tissue.FAT
        plane[self.wall.muscle_outer(yy, xx)] = Tissue.MUSCLE
        spine = self._spine(yy, xx)
        plane[spine["paraspinal"]] = Tissue.MUSCLE
        plane[spine["posterior"]] = Tissue.CORTICAL
        plane[_inset(xx, spine["posterior"])] = Tissue.CANCELLOUS
        plane[spine["vertebra"]] = Tissue.CORTICAL
        plane[_inset(xx, spine["vertebra"])] = Tissue.CANCELLOUS
        plane[spine["canal"]] = Tissue.FLUID
        cavity = self.wall.inner(yy, xx) & ~np.any(list(spine.values()), axis=0)

        labels = np.repeat(plane[None], len(z), axis=0)
        cax, cay = self.wall.cavity_axes
        mx, my = cax + 0.5 * self.wall.muscle, cay + 0.5 * self.wall.muscle
        radial = 0.42 * self.wall.muscle
        for angle, phase in self.ribs:
            rows = np.nonzero(np.mod(z - phase, RIB_PERIOD_MM) < RIB_HEIGHT_MM)[0]
            if rows.size == 0:
                continue
            cx, cy = mx * np.cos(angle), self.wall.cy + my * np.sin(angle)
            tang = np.array([-mx * np.sin(angle), my * np.cos(angle)])
            tang /= np.linalg.norm(tang)
            u = (xx - cx) * tang[0] + (yy - cy) * tang[1]
            v = -(xx - cx) * tang[1] + (yy - cy) * tang[0]
            r = np.hypot(u / 8.0, v / radial)
            rib = np.where(r < 1.0, np.where(r < 0.6, Tissue.CANCELLOUS, Tissue.CORTICAL), 0)
            sel = rib > 0
            for row in rows:
                labels[row][sel] = rib[sel]
        return labels, cavity

    def _spine(self, y: np.ndarray, x: np.ndarray) -> dict[str, np.ndarray]:
        """Masks of the static spine parts at points ``(y, x)`` (mm)."""
        ys, rv = self.spine_y, self.vertebra_r
        paraspinal = np.zeros(np.shape(y), bool)
        for side in (-1.0, 1.0):
            paraspinal |= ((x - side * 1.9 * rv) / (1.5 * rv)) ** 2 + (
                (y - ys - 2.1 * rv) / (1.3 * rv)
            ) ** 2 < 1
        lamina = (np.abs(x) / (1.15 * rv)) ** 2 + ((y - ys - 1.75 * rv) / (0.4 * rv)) ** 2 < 1
        spinous = (x / (0.28 * rv)) ** 2 + ((y - ys - 2.5 * rv) / (0.85 * rv)) ** 2 < 1
        return {
            "paraspinal": paraspinal,
            "posterior": lamina | spinous,
            "vertebra": np.hypot(x, y - ys) < rv,
            "canal": np.hypot(x, y - ys - 1.4 * rv) < 0.45 * rv,
        }

    def in_cavity(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Whether points ``(y, x)`` lie inside the body wall and off the spine (moving part)."""
        return self.wall.inner(y, x) & ~np.any(list(self._spine(y, x).values()), axis=0)

    # ------------------------------------------------------------------ moving parts

    def visceral_labels(
        self,
        qz: np.ndarray,
        qy: np.ndarray,
        qx: np.ndarray,
        rows: np.ndarray | None = None,
        slack: float = 0.0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels of the inside-of-wall anatomy at flat points (mm); also the liver mask.

        ``rows`` (optional, ascending) are y values with ``|qy - rows| <= slack``: the
        unwarped rows of raster-ordered points; they let each shape look at a window only.
        """
        n = qz.size
        lo = [float(qz.min()), float(qy.min()), float(qx.min())] if n else [0.0] * 3
        hi = [float(qz.max()), float(qy.max()), float(qx.max())] if n else [0.0] * 3
        labels = np.full(qz.shape, Tissue.FAT, np.uint8)

        def candidates(bbox: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
            if not n or not overlaps(bbox, lo, hi):
                return np.zeros(0, np.intp)
            i0, i1 = 0, n
            if rows is not None:
                i0 = int(np.searchsorted(rows, rows.dtype.type(bbox[0, 1] - slack), "left"))
                i1 = int(np.searchsorted(rows, rows.dtype.type(bbox[1, 1] + slack), "right"))
            win = slice(i0, i1)
            box = in_box(bbox, qz[win], qy[win], qx[win])
            if where is not None:
                box &= where[win]
            return np.nonzero(box)[0] + i0

        def paint(shape: Ellipsoid, tissue: int, where: np.ndarray | None = None) -> np.ndarray:
            idx = candidates(shape.bbox, where)
            idx = idx[shape.radius(qz[idx], qy[idx], qx[idx]) < 1.0]
            labels[idx] = tissue
            hit = np.zeros(n, bool)
            hit[idx] = True
            return hit

        def shrunk(shape: Ellipsoid, by: float) -> Ellipsoid:
            return Ellipsoid(
                shape.center, tuple(a - by for a in shape.axes), shape.angle, shape.deform
            )

        zt, curv, dx0, dy0 = self.dome
        lung = qz > zt - curv * ((qx - dx0) ** 2 + (qy - dy0) ** 2)
        labels[lung] = Tissue.LUNG
        below = ~lung
        for loop, air in self.bowel:
            content = paint(shrunk(loop, 2.5), Tissue.FLUID, paint(loop, Tissue.BOWEL_WALL, below))
            if air:
                labels[content & (qy < loop.center[1])] = Tissue.AIR
        wall = paint(self.stomach, Tissue.BOWEL_WALL, below)
        content = paint(shrunk(self.stomach, 4.0), Tissue.FLUID, wall)
        labels[content & (qy < self.stomach_level)] = Tissue.AIR
        paint(self.spleen, Tissue.SPLEEN, below)
        liver = np.zeros(n, bool)
        for lobe in self.liver:
            liver |= paint(lobe, Tissue.LIVER, below)
        paint(self.gallbladder, Tissue.FLUID, liver)
        for kidney in self.kidneys:
            hit = paint(kidney, Tissue.KIDNEY_CORTEX, below)
            core = Ellipsoid(
                kidney.center, tuple(0.62 * a for a in kidney.axes), kidney.angle, kidney.deform
            )
            paint(core, Tissue.KIDNEY_MEDULLA, hit)
        ay, ax, ar = self.aorta
        idx = candidates(np.array([[-np.inf, ay - ar, ax - ar], [np.inf, ay + ar, ax + ar]]))
        labels[idx[(qy[idx] - ay) ** 2 + (qx[idx] - ax) ** 2 < ar * ar]] = Tissue.AORTA
        iy, ix, iry, irx, itop = self.ivc
        idx = candidates(np.array([[-np.inf, iy - iry, ix - irx], [itop, iy + iry, ix + irx]]))
        labels[idx[((qy[idx] - iy) / iry) ** 2 + ((qx[idx] - ix) / irx) ** 2 < 1.0]] = Tissue.IVC
        liver &= labels == Tissue.LIVER
        trunk, *branches = self.portal_veins
        vessels = [(trunk, Tissue.PORTAL_VEIN, below)]
        vessels += [(t, Tissue.HEPATIC_VEIN, liver) for t in self.hepatic_veins]
        vessels += [(t, Tissue.PORTAL_VEIN, liver) for t in branches]
        for tube, tissue, where in vessels:
            idx = candidates(tube.bbox, where)
            labels[idx[tube.inside(qz[idx], qy[idx], qx[idx])]] = tissue
        if self.lesion is not None:
            idx = candidates(self.lesion.shape.bbox)
            lesion = self.lesion.labels(qz[idx], qy[idx], qx[idx])
            idx = idx[lesion > 0]
            labels[idx] = lesion[lesion > 0]
            liver[idx] = True
        return labels, liver


def _inset(xx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Interior of a bone mask (1.5 mm inset), leaving a cortical shell."""
    step = max(float(abs(xx[0, 1] - xx[0, 0])), 1e-3)
    return binary_erosion(mask, iterations=max(1, int(round(1.5 / step))))


def draw_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a random patient's anatomy (body size, organ shapes and positions, vessels)."""
    u = rng.uniform
    wall = Wall(
        cy=float(u(-8, 8)),
        bx=float(u(140, 178)),
        by=float(u(98, 128)),
        power=float(u(2.1, 2.6)),
        fat=float(u(8, 32)),
        muscle=float(u(9, 14)),
        harmonics=(float(u(0, 0.03)), float(u(0, 6.3)), float(u(0, 0.02)), float(u(0, 6.3))),
    )
    cbx, cby = wall.cavity_axes
    cy = wall.cy
    rv = float(u(17, 22))
    spine_y = cy + wall.by - 0.5 * wall.fat - 3.3 * rv  # posterior fat is thinner
    ribs = tuple(
        (float(a), float(u(0, RIB_PERIOD_MM)))
        for a in np.deg2rad(np.r_[np.linspace(-45, 55, 5), np.linspace(125, 225, 5)])
    )
    az = float(u(78, 98))
    scale = float(u(0.9, 1.05))
    right = Ellipsoid(
        center=(0.0, cy - 0.06 * cby, -0.43 * cbx),
        axes=(az, 0.86 * cby * scale, 0.55 * cbx * scale),
        angle=float(u(-0.15, 0.15)),
        deform=random_deform(rng, 0.06),
    )
    left = Ellipsoid(
        center=(0.38 * az, cy - 0.5 * cby, 0.1 * cbx),
        axes=(0.55 * az, 0.36 * cby, 0.45 * cbx * scale),
        angle=float(u(-0.3, 0.1)),
        deform=random_deform(rng, 0.07),
    )
    dome = (
        float(az * u(0.9, 1.0)),
        float(u(0.003, 0.005)),
        float(-0.4 * cbx),
        float(cy - 0.1 * cby),
    )
    gallbladder = Ellipsoid(
        (-0.6 * az, cy - 0.5 * cby, -0.25 * cbx), (28.0, 13.0, 15.0), 0.5, random_deform(rng, 0.05)
    )
    spleen = Ellipsoid(
        center=(0.15 * az, cy + 0.38 * cby, 0.72 * cbx),
        axes=(float(u(45, 60)), float(u(48, 60)), float(u(22, 30))),
        angle=float(u(0.5, 0.9)),
        deform=random_deform(rng, 0.06),
    )
    kidneys = tuple(
        Ellipsoid(
            center=(zc * az, spine_y - 0.3 * rv, side * (rv + float(u(42, 52)))),
            axes=(float(u(48, 58)), float(u(26, 32)), float(u(22, 27))),
            angle=side * float(u(0.3, 0.55)),
            deform=random_deform(rng, 0.04),
        )
        for side, zc in ((-1.0, -0.95), (1.0, -0.7))
    )
    stomach = Ellipsoid(
        center=(0.35 * az, cy - 0.3 * cby, 0.4 * cbx),
        axes=(float(u(40, 55)), float(u(30, 42)), float(u(32, 45))),
        angle=float(u(-0.4, 0.2)),
        deform=random_deform(rng, 0.08),
    )
    stomach_level = stomach.center[1] - float(u(0.0, 0.7)) * stomach.axes[1]
    bowel = tuple(
        (
            Ellipsoid(
                center=(
                    float(u(-1.4, 0.2)) * az,
                    cy + float(u(-0.75, 0.2)) * cby,
                    float(u(-0.3, 0.8)) * cbx,
                ),
                axes=(float(u(14, 30)), float(u(12, 24)), float(u(12, 24))),
                angle=float(u(0, np.pi)),
                deform=random_deform(rng, 0.08),
            ),
            bool(u() < 0.5),
        )
        for _ in range(int(rng.integers(8, 14)))
    )
    aorta = (spine_y - rv - float(u(11, 15)), float(u(8, 16)), float(u(10, 13)))
    ivc = (
        spine_y - rv - float(u(6, 10)),
        -float(u(22, 30)),
        float(u(7, 10)),
        float(u(11, 15)),
        0.75 * az,
    )
    hilum = np.array([-0.1 * az, cy - 0.05 * cby, -0.22 * cbx])
    trunk_start = np.array([-0.55 * az, spine_y - rv - 28.0, -5.0])
    portal = [Tube(tuple(trunk_start), tuple(hilum), 7.0, 6.5)]
    portal += _vessel_tree(
        rng,
        hilum,
        [(-0.1, 0.1, -1.0), (0.35, -0.6, 0.75)],
        (45.0, 32.0, 24.0, 18.0),
        (6.0, 4.2, 3.0, 2.1, 1.5),
    )
    ivc_top = np.array([0.7 * az, ivc[0], ivc[1]])
    hepatic = _vessel_tree(
        rng,
        ivc_top,
        [(-0.6, -0.3, -1.0), (-0.6, -1.0, -0.1), (-0.3, -0.8, 0.8)],
        (50.0, 35.0, 25.0),
        (5.5, 3.8, 2.6, 1.8),
    )
    return Anatomy(
        wall=wall,
        spine_y=spine_y,
        vertebra_r=rv,
        ribs=ribs,
        dome=dome,
        liver=(right, left),
        gallbladder=gallbladder,
        spleen=spleen,
        kidneys=kidneys,
        stomach=stomach,
        stomach_level=stomach_level,
        bowel=bowel,
        aorta=aorta,
        ivc=ivc,
        portal_veins=tuple(portal),
        hepatic_veins=tuple(hepatic),
    )


def _vessel_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    directions: list[tuple[float, float, float]],
    lengths: tuple[float, ...],
    radii: tuple[float, ...],
) -> list[Tube]:
    """Binary branching vessel tree: one trunk per direction, each splitting at every level."""
    tubes: list[Tube] = []
    stack = [(root, np.asarray(d, float) / np.linalg.norm(d), 0) for d in directions]
    while stack:
        start, direction, level = stack.pop()
        length = lengths[level] * rng.uniform(0.8, 1.2)
        end = start + direction * length
        tubes.append(Tube(tuple(start), tuple(end), radii[level], radii[level + 1]))
        if level + 1 < len(lengths):
            for _ in range(2):
                turn = direction + rng.normal(0.0, 0.55, 3)
                stack.append((end, turn / np.linalg.norm(turn), level + 1))
    return tubes
