"""Registration stage: rigid, affine and non-rigid variants of a cohort, alignment quality."""

import importlib

_LAZY = {
    "VARIANTS": "registration.stage",
    "alignment_table": "registration.alignment",
    "load_transforms": "registration.transforms",
    "register_variant": "registration.stage",
}

__all__ = ["VARIANTS", "alignment_table", "load_transforms", "register_variant"]


def __getattr__(name: str) -> object:
    """The stage loads on first use, so a light submodule (``registration.backends``) can be
    imported alone, e.g. for ``--help``."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
