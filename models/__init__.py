"""Detectors for the multiphase liver lesion benchmark, behind one registry.

>>> import models
>>> net = models.build("gssd_pp", input_size=300)
>>> models.available()  # doctest: +SKIP
"""

from models.base import Detector, Supervision
from models.registry import (
    ModelInfo,
    available,
    build,
    check_overrides,
    info,
    list_models,
    load_module,
    register_model,
    settings,
)

__all__ = [
    "Detector",
    "ModelInfo",
    "Supervision",
    "available",
    "build",
    "check_overrides",
    "info",
    "list_models",
    "load_module",
    "register_model",
    "settings",
]
