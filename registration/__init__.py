"""Registration stage: rigid, affine and non-rigid variants of a cohort, alignment quality."""

from registration.alignment import alignment_table
from registration.stage import VARIANTS, register_variant
from registration.transforms import load_transforms

__all__ = ["VARIANTS", "alignment_table", "load_transforms", "register_variant"]
