"""A stand-in for elastix in stage tests: identity 'registration' on a tiny cohort."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from registration_phantom import make_cohort, make_patient

from registration.backends import ElastixError, SliceRegistration, resolve_maps


class FakeBackend:
    """Identity 'registration' that counts calls, records the initial transforms it was given
    and can fail on chosen calls."""

    name = "fake"

    def __init__(self, fail: dict[int, str] | None = None, reuses_affine: bool = False):
        self.calls = 0
        self.fail = fail or {}
        self.reuses_affine = reuses_affine
        self.initial: list = []
        self.maps: list = []

    def register(self, fixed, moving, spacing, maps, initial=None) -> SliceRegistration:
        self.calls += 1
        self.initial.append(initial)
        self.maps.append(resolve_maps(maps))
        how = self.fail.get(self.calls)
        if how == "raise":
            raise ElastixError("elastix exploded")
        if how == "bug":
            raise TypeError("a programming error")
        if how == "interrupt":
            raise KeyboardInterrupt
        warped = np.full_like(moving, np.nan) if how == "nan" else moving.copy()
        return SliceRegistration(warped, f"{self.maps[-1][-1].base} {self.calls}")

    def warp_mask(self, mask, reg):
        return mask.copy()

    def transform_maps(self, reg):
        return [{"Transform": [reg.transform]}]

    def displacement(self, reg):
        raise AssertionError("fake cohorts carry no displacement")


def fake_cohort(root: Path, n: int = 2) -> None:
    patients = [make_patient(f"p{i}", i, size=48, slices=3, motion=0.5) for i in range(n)]
    for p in patients:
        p.displacement = None
    make_cohort(root, patients)
