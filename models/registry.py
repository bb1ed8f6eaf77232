"""Model registry in the style of timm: ``register_model``, ``build``, ``available``.

Third-party detectors join without forking: a package declares an entry point in the group
``phasebench.models`` (``my_detector = "my_pkg.my_detector"``; loading the module runs its
``@register_model`` decorators), or the CLI is given ``--model-module my_pkg.my_detector``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import torch.nn as nn

ENTRY_POINT_GROUP = "phasebench.models"
_BUILTIN_MODULES = ("models.ssd", "models.pixellink", "models.retinanet", "models.mscr")


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows of a model without building it."""

    name: str
    builder: Callable[..., nn.Module]
    paper_row: str
    table: str
    description: str
    module: str


_REGISTRY: dict[str, ModelInfo] = {}
_loaded = False


def register_model(
    name: str, *, paper_row: str = "", table: str = "", description: str = ""
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder ``fn(**overrides) -> Detector`` under ``name``.

    ``table`` is where the paper reports the model: ``"I"`` (main rows), ``"III"``
    (ablations) or ``""`` (not in the paper, e.g. a user's detector).
    """

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY and _REGISTRY[name].builder is not fn:
            raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].module}")
        doc_lines = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=fn,
            paper_row=paper_row,
            table=table,
            description=description or (doc_lines[0] if doc_lines else ""),
            module=fn.__module__,
        )
        return fn

    return decorator


def load_builtin_and_plugins() -> None:
    """Import the built-in model modules and every ``phasebench.models`` entry point once.

    A plugin that fails to import raises (naming the entry point) every time, not just once.
    """
    global _loaded
    if _loaded:
        return
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as err:  # a broken plugin must not hide the built-in models
            raise ImportError(
                f"model plugin {ep.name!r} ({ep.value}) from entry point group "
                f"{ENTRY_POINT_GROUP!r} failed to load: {err}"
            ) from err
    _loaded = True


def load_module(module: str) -> None:
    """Import a user module that registers models (``--model-module``)."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"--model-module {module!r} cannot be imported: {err}") from err


def available() -> list[str]:
    """Names of every registered model, sorted."""
    load_builtin_and_plugins()
    return sorted(_REGISTRY)


def info(name: str) -> ModelInfo:
    """What the registry knows of ``name`` (KeyError listing the choices if unknown)."""
    load_builtin_and_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def build(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` go to its builder (e.g. ``width=0.25``)."""
    return info(name).builder(**overrides)
