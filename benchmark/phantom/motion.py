"""Breath-hold misalignment of a phase relative to portal: a sliding, tapered, smooth field.

A phase's displacement ``d(p)`` (mm, components ``dz, dy, dx``) says where the anatomy shown at
voxel ``p`` of that phase lies in the portal phase: ``p + d(p)``. It is

* mostly cranio-caudal, with an AP part of 0.5-0.7x the SI part and an LR part of about a
  quarter of ``motion_mm`` (random sign). Free breathing moves the liver 11.9 mm SI, 3.8 mm AP
  and 1.3 mm LR, but two breath-holds rarely stop at the same depth nor with the same chest /
  belly mix: the between-breath-hold mismatch reported for registration (4.95 +- 2.71 mm, up
  to 30 mm) is the full 3D vector, so the in-plane share here is larger than in free breathing;
* zero in the body wall, spine and ribs and ramping up over a few mm inside the wall, so the
  organs slide along the wall; the in-plane part ramps up over a longer distance (at least
  10 mm and 2.5x the largest in-plane amplitude of that breath: 15-28 mm at the default
  motion) so organs do not push into the wall and the field never folds (the
  ramp adds an in-plane gradient below 0.6);
* scaled down smoothly to ~0.65x over the kidneys and tapered away from the diaphragm;
* plus a smooth random non-rigid part (separable low-frequency cosines, wavelengths 90-220 mm),
  stronger in-plane (0.22x ``motion_mm`` per term) than through-plane: organs deform, not only
  shift, between breath-holds; only a non-rigid registration can follow this part;
* composed with a bulk in-plane rigid motion of the whole body (:class:`Bulk`, wall, spine and
  ribs included): the patient shifts on the table in the minutes between two series.
  If ``R`` maps a point of the phase to the body frame of portal and ``b`` is the breathing
  field above (defined in that frame), the phase's field is ``d(p) = R(p) - p + b(R(p))``;
  its Jacobian is ``det(I + grad b)`` at ``R(p)`` (``det R = 1``), so it stays positive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates

SLIDE_RAMP_MM = (1.0, 8.0)
INPLANE_RAMP_MM = (1.0, 10.0)
"""Shortest in-plane ramp: start and end distance from the wall (mm)."""
INPLANE_RAMP_PER_MM = 2.5
"""The in-plane ramp is at least this many mm long per mm of in-plane amplitude (no folding)."""
RETRO_SCALE = 0.65
TAPER = (0.6, 1.3)
"""Range of the cranio-caudal taper of the whole field (more motion near the diaphragm)."""
BULK_ROTATION_DEG_PER_MM = 0.3
"""Standard deviation of the bulk rotation per mm of ``bulk_mm`` (1 degree at 3.3 mm)."""
QUANTUM_MM = 1.0 / 256.0
"""Stored fields are rounded to this step (keeps files small; far below a voxel)."""


@dataclass(frozen=True)
class Breath:
    """Random parameters of one phase's misalignment."""

    shift: tuple[float, float, float]  # (dz, dy, dx) mm at full weight
    waves: tuple[tuple[float, ...], ...]  # per term: comp, amp, kz, pz, ky, py, kx, px

    @property
    def inplane_ramp_mm(self) -> tuple[float, float]:
        """Distances from the wall (mm) over which the in-plane motion ramps from 0 to full."""
        amp = [TAPER[1] * abs(self.shift[c]) + sum(abs(w[1]) for w in self.waves if int(w[0]) == c)
               for c in (1, 2)]
        start, end = INPLANE_RAMP_MM
        return start, max(end, start + INPLANE_RAMP_PER_MM * float(np.hypot(*amp)))


def draw_breath(rng: np.random.Generator, motion_mm: float) -> Breath:
    """Draw a breath-hold mismatch whose SI part is 0.5-1.5x ``motion_mm`` (random sign)."""
    si = motion_mm * rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0])
    ap = -si * rng.uniform(0.5, 0.7)
    lr = motion_mm * rng.uniform(0.2, 0.3) * rng.choice([-1.0, 1.0])
    waves = []
    for comp, amp in ((0, 0.12), (1, 0.22), (2, 0.22)):
        for _ in range(3):
            k = 2 * np.pi / rng.uniform(90.0, 220.0, 3)
            phase = rng.uniform(0, 2 * np.pi, 3)
            waves.append(
                (
                    comp,
                    amp * motion_mm * rng.normal(),
                    k[0],
                    phase[0],
                    k[1],
                    phase[1],
                    k[2],
                    phase[2],
                )
            )
    return Breath(
        (float(si), float(ap), float(lr)), tuple(tuple(float(v) for v in w) for w in waves)
    )


@dataclass(frozen=True)
class Bulk:
    """Rigid in-plane motion of the whole body of one phase relative to portal.

    The anatomy at in-plane point ``(y, x)`` (mm) of the phase lies in portal's body frame at
    ``centre + rot(angle) (p - centre) + shift``: a rotation about the z axis through the body
    centre, then a translation.
    """

    shift: tuple[float, float]  # (dy, dx) mm
    angle_deg: float
    centre: tuple[float, float]  # (y, x) mm

    def apply(self, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Body-frame coordinates of the phase's in-plane points ``(yy, xx)`` (mm)."""
        a = np.deg2rad(self.angle_deg)
        cos, sin = np.float32(np.cos(a)), np.float32(np.sin(a))
        ry, rx = yy - np.float32(self.centre[0]), xx - np.float32(self.centre[1])
        qy = self.centre[0] + cos * ry - sin * rx + self.shift[0]
        qx = self.centre[1] + sin * ry + cos * rx + self.shift[1]
        return qy.astype(np.float32), qx.astype(np.float32)


def draw_bulk(rng: np.random.Generator, bulk_mm: float, centre: tuple[float, float]) -> Bulk:
    """Draw a table shift: translation of 0.5-1.5x ``bulk_mm`` in a uniform in-plane direction,
    rotation normal with SD ``BULK_ROTATION_DEG_PER_MM * bulk_mm`` degrees (clipped at 2.5 SD)."""
    size = bulk_mm * rng.uniform(0.5, 1.5)
    direction = rng.uniform(0.0, 2.0 * np.pi)
    angle = BULK_ROTATION_DEG_PER_MM * bulk_mm * float(np.clip(rng.normal(), -2.5, 2.5))
    return Bulk(
        (float(size * np.sin(direction)), float(size * np.cos(direction))),
        float(angle),
        (float(centre[0]), float(centre[1])),
    )


def compose_bulk(
    breathing: np.ndarray,
    bulk: Bulk,
    y: np.ndarray,
    x: np.ndarray,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Field ``[Z, Y, X, 3]`` of :class:`Bulk` followed by ``breathing`` (a field of
    :func:`displacement` on the grid axes ``y``, ``x``, mm), and the body-frame coordinate planes
    ``(qy, qx)`` of the grid. ``breathing`` is interpolated linearly at the moved points (it is
    smooth); points moved off the grid take the nearest edge value (air: zero)."""
    yy, xx = np.meshgrid(np.asarray(y, np.float32), np.asarray(x, np.float32), indexing="ij")
    qy, qx = bulk.apply(yy, xx)
    step_y, step_x = float(y[1] - y[0]), float(x[1] - x[0])
    coords = np.stack([(qy - y[0]) / step_y, (qx - x[0]) / step_x])
    field = np.empty_like(breathing)
    for k in range(breathing.shape[0]):
        for comp in range(3):
            field[k, :, :, comp] = map_coordinates(
                breathing[k, :, :, comp], coords, order=1, mode="nearest"
            )
    field[..., 1] += qy - yy
    field[..., 2] += qx - xx
    return quantize(field), (qy, qx)


def quantize(field: np.ndarray) -> np.ndarray:
    """Round a field to ``QUANTUM_MM`` in place and return it."""
    field *= np.float32(1.0 / QUANTUM_MM)
    np.rint(field, out=field)
    field *= np.float32(QUANTUM_MM)
    return field


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _ramp(dist: np.ndarray, ramp: tuple[float, float]) -> np.ndarray:
    return _smoothstep((dist - ramp[0]) / (ramp[1] - ramp[0])).astype(np.float32)


def wall_weights(cavity: np.ndarray, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Through-plane (sliding) weight ``[Y, X]`` (0 outside the cavity, 1 deep in) and the
    distance to the wall (mm) from which :func:`displacement` ramps the in-plane part."""
    dist = (distance_transform_edt(cavity) * pixel_mm).astype(np.float32)
    return _ramp(dist, SLIDE_RAMP_MM), dist


def organ_scale(
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    kidneys: list[tuple[tuple[float, ...], tuple[float, ...]]],
) -> np.ndarray:
    """Smooth motion scale ``[Z, Y, X]``: ~0.65 over each kidney ``(center, axes)``, 1 far away."""
    bump = np.zeros((len(z), len(y), len(x)), np.float32)
    for (cz, cy, cx), (az, ay, ax) in kidneys:
        rz = ((z - cz) / az).astype(np.float32) ** 2
        ry = ((y - cy) / ay).astype(np.float32) ** 2
        rx = ((x - cx) / ax).astype(np.float32) ** 2
        r2 = rz[:, None, None] + (ry[:, None] + rx[None, :])[None]
        np.maximum(bump, np.exp(-0.5 * (r2 / 1.44) ** 2), out=bump)
    return 1.0 - (1.0 - RETRO_SCALE) * bump


def displacement(
    breath: Breath,
    z: np.ndarray,
    y: np.ndarray,
    x: np.ndarray,
    weights: tuple[np.ndarray, np.ndarray],
    scale: np.ndarray,
) -> np.ndarray:
    """Displacement ``[Z, Y, X, 3]`` (mm, ``dz, dy, dx``) on the grid ``z x y x x`` (mm).

    ``weights`` come from :func:`wall_weights`, ``scale`` from :func:`organ_scale`.
    """
    slide, dist = weights
    inplane = _ramp(dist, breath.inplane_ramp_mm)
    z, y, x = (np.asarray(a, np.float32) for a in (z, y, x))
    taper = np.clip(1.0 + 0.3 * z / 100.0, *TAPER)
    field = np.empty((len(z), len(y), len(x), 3), np.float32)
    for comp, weight in ((0, slide), (1, inplane), (2, inplane)):
        # smooth part: a sum of separable terms f(z) g(y) h(x), built slice by slice
        terms = [
            (
                amp * np.cos(kz * z + pz),
                np.outer(np.cos(ky * y + py), np.cos(kx * x + px)).astype(np.float32),
            )
            for c, amp, kz, pz, ky, py, kx, px in breath.waves
            if int(c) == comp
        ]
        for k in range(len(z)):
            out = field[k, :, :, comp]
            np.multiply(scale[k], np.float32(breath.shift[comp] * taper[k]), out=out)
            for fz, plane in terms:
                out += np.float32(fz[k]) * plane
            out *= weight
    return quantize(field)


def jacobian_determinant(disp: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Determinant of the Jacobian of ``p -> p + d(p)`` for a ``[Z, Y, X, 3]`` field (mm)."""
    jac = np.empty((*disp.shape[:3], 3, 3), np.float64)
    for i in range(3):
        grads = np.gradient(disp[..., i].astype(np.float64), *spacing)
        for j in range(3):
            jac[..., i, j] = grads[j] + (1.0 if i == j else 0.0)
    return np.linalg.det(jac)
