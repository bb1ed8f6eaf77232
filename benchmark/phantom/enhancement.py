"""Tissue labels and their per-phase attenuation (HU), drawn per patient.

Ranges are published values from the radiology literature (120 kVp, ~5 mm slices); values
the literature gives only as estimates are used as given; bowel wall and lung, absent from
those sources, use common textbook values (documented beside each entry).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

PRE, ART, PV, DEL = range(4)


class Tissue(IntEnum):
    """Label codes of the phantom's anatomy label maps."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    CANCELLOUS = 3
    CORTICAL = 4
    FLUID = 5
    LUNG = 6
    BOWEL_WALL = 7
    LIVER = 8
    PORTAL_VEIN = 9
    HEPATIC_VEIN = 10
    AORTA = 11
    IVC = 12
    SPLEEN = 13
    KIDNEY_CORTEX = 14
    KIDNEY_MEDULLA = 15
    LESION = 16
    LESION_NODULE = 17
    NECROSIS = 18
    CAPSULE = 19


LESION_TISSUES = (Tissue.LESION, Tissue.LESION_NODULE, Tissue.NECROSIS, Tissue.CAPSULE)
N_TISSUES = len(Tissue)

ENHANCEMENT_PATTERNS = {
    "typical": 0.56,
    "no_washout": 0.22,
    "hypovascular": 0.13,
    "iso_arterial": 0.09,
}
"""HCC enhancement patterns and their frequencies.

Typical (arterial hyperenhancement + washout) ~56 %; the other hypervascular lesions (~78 % in
all) keep enhancing without washout; ~13 % are hypovascular; the rest are iso-enhancing in the
arterial phase and wash out. Capsule, necrosis and mosaic architecture are drawn separately.
"""


def _u(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def draw_hu_table(rng: np.random.Generator) -> np.ndarray:
    """Per-patient HU of every non-lesion tissue: float32 ``[4 phases, N_TISSUES]``."""
    t = np.zeros((4, N_TISSUES), np.float32)

    def same(tissue: Tissue, value: float) -> None:
        t[:, tissue] = value

    same(Tissue.AIR, -1000.0)
    same(Tissue.FAT, _u(rng, -115, -95))
    same(Tissue.CANCELLOUS, _u(rng, 200, 400))
    same(Tissue.CORTICAL, _u(rng, 800, 1500))
    same(Tissue.FLUID, _u(rng, 3, 17))
    same(Tissue.LUNG, _u(rng, -880, -820))  # aerated lung base (textbook, not in the table)
    muscle = _u(rng, 35, 50)
    t[:, Tissue.MUSCLE] = [
        muscle,
        muscle + _u(rng, 3, 7),
        muscle + _u(rng, 10, 20),
        muscle + _u(rng, 8, 12),
    ]
    # enhancing bowel / stomach wall (textbook estimate, not in the table)
    t[:, Tissue.BOWEL_WALL] = [_u(rng, 35, 45), _u(rng, 80, 110), _u(rng, 95, 115), _u(rng, 80, 95)]
    liver_pre = _u(rng, 56, 64)
    t[:, Tissue.LIVER] = [
        liver_pre,
        liver_pre + _u(rng, 16, 24),
        _u(rng, 111, 124),
        _u(rng, 91, 99),
    ]
    t[:, Tissue.AORTA] = [_u(rng, 41, 49), _u(rng, 295, 355), _u(rng, 150, 170), _u(rng, 111, 129)]
    t[:, Tissue.PORTAL_VEIN] = [
        _u(rng, 36, 44),
        _u(rng, 135, 155),
        _u(rng, 162, 198),
        _u(rng, 112, 128),
    ]
    hv_pre = _u(rng, 36, 44)
    hepatic = [hv_pre, hv_pre + _u(rng, 25, 50), _u(rng, 151, 169), _u(rng, 112, 128)]
    t[:, Tissue.HEPATIC_VEIN] = hepatic
    t[:, Tissue.IVC] = hepatic
    spleen_pre = float(np.clip(liver_pre - _u(rng, 2, 17), 36, 54))
    t[:, Tissue.SPLEEN] = [
        spleen_pre,
        spleen_pre + _u(rng, 98, 107),
        spleen_pre + _u(rng, 74, 81),
        _u(rng, 95, 105),
    ]
    kidney_pre = _u(rng, 31, 49)
    portal_k, delayed_k = _u(rng, 151, 179), _u(rng, 131, 159)
    t[:, Tissue.KIDNEY_CORTEX] = [kidney_pre, _u(rng, 151, 199), portal_k, delayed_k]
    t[:, Tissue.KIDNEY_MEDULLA] = [kidney_pre, _u(rng, 61, 89), portal_k, delayed_k]
    return t


def lesion_hu(
    table: np.ndarray, pattern: str, rng: np.random.Generator
) -> dict[Tissue, np.ndarray]:
    """Per-phase HU ``[4]`` of the lesion compartments, relative to this patient's liver.

    Typical HCC: 5-15 HU below liver before contrast, liver + 20-60 HU in the arterial phase,
    slightly below liver in the portal phase, liver / lesion ~1.2 in the delayed phase.
    """
    liver = table[:, Tissue.LIVER]
    pre = liver[PRE] - _u(rng, 6, 14)
    if pattern == "typical":
        art, pv, dl = (
            liver[ART] + _u(rng, 25, 55),
            liver[PV] - _u(rng, 6, 14),
            liver[DEL] / _u(rng, 1.12, 1.28),
        )
    elif pattern == "no_washout":
        art, pv, dl = (
            liver[ART] + _u(rng, 25, 55),
            liver[PV] + _u(rng, 0, 8),
            liver[DEL] + _u(rng, 0, 6),
        )
    elif pattern == "hypovascular":
        art, pv, dl = (
            liver[ART] - _u(rng, 8, 20),
            liver[PV] - _u(rng, 15, 30),
            liver[DEL] / _u(rng, 1.15, 1.35),
        )
    elif pattern == "iso_arterial":
        art, pv, dl = (
            liver[ART] + _u(rng, -3, 3),
            liver[PV] - _u(rng, 8, 16),
            liver[DEL] / _u(rng, 1.12, 1.28),
        )
    else:
        raise ValueError(f"unknown HCC enhancement pattern {pattern!r}")
    main = np.array([pre, art, pv, dl], np.float32)
    # mosaic nodules: the same pattern, shifted per phase
    nodule = main + np.array(
        [_u(rng, -6, 2), _u(rng, -25, 15), _u(rng, -12, 6), _u(rng, -10, 5)], np.float32
    )
    necrosis = np.full(4, _u(rng, 5, 20), np.float32)
    # capsule: hypo-attenuating before contrast, enhancing rim in portal and delayed phases
    capsule = np.array(
        [
            pre - _u(rng, 0, 5),
            main[ART] - _u(rng, 10, 25),
            liver[PV] + _u(rng, 12, 25),
            liver[DEL] + _u(rng, 12, 25),
        ],
        np.float32,
    )
    return {
        Tissue.LESION: main,
        Tissue.LESION_NODULE: nodule,
        Tissue.NECROSIS: necrosis,
        Tissue.CAPSULE: capsule,
    }


@dataclass(frozen=True)
class Texture:
    """Zero-mean HU pattern on one tissue: ``amplitude x`` a mean of plane waves ``(k, phase)``."""

    tissue: int
    amplitude: float
    waves: np.ndarray  # [n, 4]: kz, ky, kx (rad/mm), phase

    def values(
        self, labels: np.ndarray, qz: np.ndarray, qy: np.ndarray, qx: np.ndarray
    ) -> np.ndarray:
        """HU offsets at flat points (zero off the tissue)."""
        out = np.zeros(labels.shape, np.float32)
        idx = np.nonzero(labels == self.tissue)[0]
        if idx.size:
            z, y, x = qz[idx], qy[idx], qx[idx]
            field = sum(np.cos(kz * z + ky * y + kx * x + ph) for kz, ky, kx, ph in self.waves)
            out[idx] = self.amplitude * field / len(self.waves)
        return out


def spleen_texture(rng: np.random.Generator) -> Texture:
    """The spleen's arciform (zebra) arterial enhancement: bands 12-20 mm apart, +-30-45 HU."""
    k = 2 * np.pi / rng.uniform(12.0, 20.0, 2)
    directions = rng.normal(size=(2, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = np.column_stack([directions * k[:, None], rng.uniform(0, 2 * np.pi, 2)])
    return Texture(Tissue.SPLEEN, float(rng.uniform(30.0, 45.0)), waves.astype(np.float32))
