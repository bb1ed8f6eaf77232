"""Registration stage: rigid, affine and non-rigid variants of a cohort (2D per slice as the
paper, or 3D; default or fast elastix maps), alignment quality."""

from registration.alignment import alignment_table
from registration.stage import VARIANTS, register_variant
from registration.transforms import load_transforms, load_volume_transforms
from registration.variants import ALL_VARIANTS, Variant, parse_variant

__all__ = [
    "ALL_VARIANTS",
    "VARIANTS",
    "Variant",
    "alignment_table",
    "load_transforms",
    "load_volume_transforms",
    "parse_variant",
    "register_variant",
]
