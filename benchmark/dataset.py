"""Detector samples: the paper's 2.5D, 12-channel lesion slices of a cohort split.

Channel order (phase-major, :data:`benchmark.PHASES` order)::

    0-2 precontrast z-1, z, z+1 | 3-5 arterial | 6-8 portal | 9-11 delayed

HU are clipped to [-150, 250] and scaled to [0, 1]. Only slices whose lesion mask is non-empty
count, excluding each volume's first and last slice; boxes come from the mask through
:func:`benchmark.boxes.mask_to_boxes` (the paper's blur / threshold / open-close filter), and a
slice whose lesion vanishes under that filter is skipped (it has no box to learn).

Memory: each patient is read once; the slab of slices the items need is cached as uint8
(``round(255 * normalised)``, a 1.6 HU step, far below CT noise), 4 bytes per pixel per slice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmark import PHASES
from benchmark.augment import Sample, resize
from benchmark.boxes import mask_to_boxes
from benchmark.cohort import SPLITS, Cohort

HU_MIN, HU_MAX = -150.0, 250.0

Augment = Callable[[Sample, np.random.Generator], Sample]


def normalise_hu(volume: np.ndarray) -> np.ndarray:
    """HU -> [0, 1] after clipping to [-150, 250]."""
    return (np.clip(volume, HU_MIN, HU_MAX) - HU_MIN) / (HU_MAX - HU_MIN)


@dataclass(frozen=True)
class SliceRef:
    patient: str
    slice: int
    boxes: np.ndarray  # float32 [N, 4], native pixels


class LesionSliceDataset(Dataset):
    """Lesion slices of one split of a cohort (or registered variant) as detector samples.

    ``dataset[i]`` or ``dataset[(i, draw)]`` returns a dict ``image`` float32 ``[12, H, W]``,
    ``boxes`` float32 ``[N, 4]``, ``labels`` int64 ``[N]``, ``mask`` uint8 ``[H, W]``, ``patient``,
    ``slice``. With ``augment`` the random draw uses ``np.random.default_rng((seed, draw, i))``,
    so an index sampled at a given ``draw`` (the trainer passes its global sample counter) gives
    the same augmentation after a resume, in any worker.
    """

    def __init__(
        self,
        cohort_or_path: Cohort | str | Path,
        split: str,
        input_size: int | None = None,
        augment: Augment | None = None,
        seed: int = 0,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        self.cohort = (
            cohort_or_path if isinstance(cohort_or_path, Cohort) else Cohort(cohort_or_path)
        )
        self.split, self.input_size, self.augment, self.seed = split, input_size, augment, seed
        self.items: list[SliceRef] = []
        self._slabs: dict[str, tuple[int, np.ndarray, np.ndarray]] = {}
        for pid in self.cohort.split_ids(split):
            self._load_patient(pid)
        if not self.items:
            raise ValueError(
                f"{self.cohort.root}: split {split!r} has no lesion slices "
                f"({len(self.cohort.split_ids(split))} patients); a detector cannot be trained "
                "or evaluated on it"
            )

    def _load_patient(self, pid: str) -> None:
        patient = self.cohort.load(pid, liver=False)
        lesion = patient.lesion
        depth = lesion.shape[0]
        refs = []
        for z in np.flatnonzero(lesion.reshape(depth, -1).any(axis=1)):
            if 0 < z < depth - 1:
                boxes = mask_to_boxes(lesion[z])
                if len(boxes):
                    refs.append(SliceRef(pid, int(z), boxes))
        if not refs:
            return
        z0, z1 = refs[0].slice - 1, refs[-1].slice + 2
        slab = np.stack([normalise_hu(patient.phases[p][z0:z1]) for p in PHASES])
        slab = np.rint(slab * 255).astype(np.uint8)  # [4, nz, H, W]
        self._slabs[pid] = (z0, slab, lesion[z0:z1].copy())
        self.items.extend(refs)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def cache_bytes(self) -> int:
        return sum(s.nbytes + m.nbytes for _, s, m in self._slabs.values())

    def boxes(self) -> np.ndarray:
        """All ground-truth boxes ``[M, 4]`` at input size (e.g. for anchor optimisation)."""
        out = []
        for ref in self.items:
            _, h, w = self._slabs[ref.patient][1].shape[1:]
            scale = (self.input_size or w) / w, (self.input_size or h) / h
            out.append(ref.boxes * np.array([scale[0], scale[1], scale[0], scale[1]], np.float32))
        return np.concatenate(out)

    def raw_shape(self, index: int) -> tuple[int, int]:
        """Native ``(H, W)`` of item ``index`` (before resizing)."""
        return tuple(self._slabs[self.items[index].patient][1].shape[2:])  # type: ignore[return-value]

    def raw(self, index: int) -> Sample:
        """The un-augmented, un-resized sample; image uint8 ``[12, H, W]`` (255 = 1.0)."""
        ref = self.items[index]
        z0, slab, lesion = self._slabs[ref.patient]
        k = ref.slice - z0
        image = slab[:, k - 1 : k + 2].reshape(-1, *slab.shape[2:])
        return Sample(image, ref.boxes.copy(), lesion[k].copy())

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, draw = (key, 0) if isinstance(key, int | np.integer) else key
        sample = self.raw(int(index))
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, int(draw), int(index)))
            sample = self.augment(sample, rng)
        elif self.input_size:
            sample = resize(sample, self.input_size)
        ref = self.items[int(index)]
        return {
            "image": torch.from_numpy(_as_float(sample.image)),
            "boxes": torch.from_numpy(sample.boxes.astype(np.float32).reshape(-1, 4)),
            "labels": torch.ones(len(sample.boxes), dtype=torch.int64),
            "mask": torch.from_numpy(np.ascontiguousarray(sample.mask, dtype=np.uint8)),
            "patient": ref.patient,
            "slice": ref.slice,
        }


def _as_float(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image.astype(np.float32) * np.float32(1 / 255)
    return np.ascontiguousarray(image, dtype=np.float32)


def collate(items: list[dict]) -> tuple[torch.Tensor, list[dict]]:
    """Stack images to ``[B, 12, H, W]``; targets stay a list of per-image dicts.

    Target keys follow :class:`models.Detector`: ``boxes``, ``labels``, ``masks`` (the item's
    ``mask``), plus ``patient`` and ``slice`` for bookkeeping.
    """
    images = torch.stack([it["image"] for it in items])
    targets = [
        {"masks" if k == "mask" else k: v for k, v in it.items() if k != "image"} for it in items
    ]
    return images, targets
