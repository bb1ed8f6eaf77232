"""Sensitivity to registration mismatch, paper eq. 6.

``sensitivity = 1 - perf(f_unregistered, D_unregistered) / perf(f_R, D_R)``: the relative
performance lost by training and testing on the unregistered cohort instead of the cohort
registered with method ``R``. Lower is more robust; positive means registration helped.
"""

from __future__ import annotations

import math


def sensitivity(perf_unregistered: float, perf_registered: float) -> float:
    """Eq. 6 as a fraction (the paper prints it in %); both performances in the same unit."""
    u, r = float(perf_unregistered), float(perf_registered)
    if not (math.isfinite(u) and math.isfinite(r)):
        raise ValueError(f"sensitivity needs finite performances, got {u} and {r}")
    if r <= 0:
        raise ValueError(f"sensitivity is undefined for registered performance {r} <= 0")
    return 1.0 - u / r
