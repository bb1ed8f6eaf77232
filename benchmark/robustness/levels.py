"""Misalignment levels of a robustness ladder and the phantom cohort of each level.

A level is a misalignment scale in mm. On the phantom it is ``motion_mm`` (the breath-hold
mismatch scale, :mod:`benchmark.phantom.motion`) and the bulk table shift is scaled with it at
the phantom's default ratio (``bulk_mm = 0.75 * level``, so level 4 is the default phantom's
motion and level 0 has no motion at all: the oracle registration). Scaling both keeps the
shape of the misalignment the same along the ladder and only its size changes. On an imported
cohort it is the amplitude of the applied deformation (:mod:`benchmark.robustness.deformation`).
Either way the ladder's x axis is the misalignment measured from the stored true fields
(:mod:`benchmark.robustness.misalignment`), not the nominal level.

Every level's phantom cohort is drawn from the same seed with ``lesion_phase="portal"``: the
anatomy, the lesion, the portal phase and every label are identical at every level (the
generator keeps its random draws apart from the motion), only the non-portal phases move.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from benchmark import FIXED_PHASE
from benchmark.phantom.config import (
    DEFAULT_BULK_MM,
    DEFAULT_MOTION_MM,
    PAPER_SPLITS,
    PhantomConfig,
    cohort_name,
)

BULK_PER_MOTION = DEFAULT_BULK_MM / DEFAULT_MOTION_MM
"""Bulk table shift per mm of level on the phantom (the default phantom's ratio, 0.75)."""
LADDER_DIR = "robustness"
"""Folder under the work folder (level cohorts) and under the runs folder (ladders)."""


def parse_levels(text: str) -> list[float]:
    """``"0,2,4,8,12"`` -> ``[0.0, 2.0, 4.0, 8.0, 12.0]`` (sorted, distinct, finite, >= 0)."""
    levels = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(
                f"--motion-mm {text!r}: {part.strip()!r} is not a number; give levels in mm "
                "as a comma list, e.g. 0,2,4,8,12"
            ) from None
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"--motion-mm {text!r}: levels must be finite and >= 0 mm")
        levels.append(value)
    levels = sorted(set(levels))
    if len(levels) < 2:
        raise ValueError(f"--motion-mm {text!r}: a ladder needs at least two levels")
    return levels


def level_name(level: float) -> str:
    """``4.0`` -> ``"motion4mm"`` (names level cohorts and their run folders)."""
    return f"motion{level:g}mm"


def phantom_level_config(phantom: dict[str, Any], level: float) -> PhantomConfig:
    """The phantom settings of one level from a profile's ``phantom`` section."""
    return PhantomConfig(
        size=phantom["size"],
        slices=phantom["slices"],
        motion_mm=level,
        bulk_mm=level * BULK_PER_MOTION,
        lesion_phase=FIXED_PHASE,
    )


def level_cohort_dir(work: Path, ladder: str, level: float) -> Path:
    """``WORK/robustness/<ladder>-motion<L>mm``: one complete cohort per level."""
    return Path(work) / LADDER_DIR / f"{ladder}-{level_name(level)}"


def ensure_phantom_levels(
    config: dict[str, Any], levels: list[float], work: Path
) -> tuple[str, dict[float, Path]]:
    """Synthesise the profile's phantom once per level (kept when complete); returns the
    ladder name and each level's cohort folder."""
    from benchmark.cohort import MANIFEST
    from benchmark.phantom import synthesize

    phantom = config["phantom"]
    ladder = cohort_name(phantom)
    roots = {}
    for level in levels:
        settings = phantom_level_config(phantom, level)  # invalid levels fail before any work
        root = level_cohort_dir(work, ladder, level)
        if not (root / MANIFEST).exists():
            synthesize(
                root,
                phantom["patients"],
                phantom["seed"],
                settings,
                workers=phantom["workers"],
                splits=tuple(phantom.get("splits") or PAPER_SPLITS),
            )
        roots[level] = root
    return ladder, roots
