"""Registration stage: rigid, affine and non-rigid variants of a cohort (2D per slice as the
paper, or 3D; default or fast elastix maps), alignment quality.

Public API: :func:`register_variant` (a variant of a cohort), :func:`register_patient` (one
patient), :func:`alignment_table` (Table II), the variant names (:class:`Variant`,
:func:`parse_variant`) and the alignment metrics (:mod:`registration.metrics`). Of
:mod:`benchmark` the package uses only the core (cohort format, atomic writes, names).
"""

import importlib

_LAZY = {
    "ALL_VARIANTS": "registration.variants",
    "PAPER_VARIANTS": "registration.variants",
    "Variant": "registration.variants",
    "parse_variant": "registration.variants",
    "alignment_table": "registration.alignment",
    "load_transforms": "registration.transforms",
    "load_volume_transforms": "registration.transforms",
    "register_patient": "registration.stage",
    "register_variant": "registration.stage",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> object:
    """The stage loads on first use, so a light submodule (``registration.backends``) can be
    imported alone, e.g. for ``--help``."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
