"""Model registry in the style of timm: ``register_model``, ``build``, ``available``.

Third-party detectors join without forking: a package declares an entry point in the group
``phasebench.models`` (``my_detector = "my_pkg.my_detector"``; loading the module runs its
``@register_model`` decorators), or the CLI is given ``--model-module my_pkg.my_detector``.
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
from collections.abc import Callable, Iterable
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
    """Decorator registering a builder ``fn(input_size=..., width=..., ...) -> Detector`` under
    ``name``. The builder names every override it takes, with its type and default.

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


def list_models(table: str | None = None, pattern: str | None = None) -> list[str]:
    """Names of the registered models, sorted: all, or those of paper table ``table``
    (``"I"``, ``"III"``, ``""`` for models not in the paper) whose name matches the
    shell-style ``pattern`` (``"gssd*"``)."""
    return [
        name
        for name in available()
        if (table is None or _REGISTRY[name].table == table)
        and (pattern is None or fnmatch.fnmatchcase(name, pattern))
    ]


def settings(name: str) -> list[str]:
    """The overrides the builder of ``name`` takes (its keyword arguments)."""
    parameters = inspect.signature(info(name).builder).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise TypeError(f"model {name!r}: a builder names its arguments (no **kwargs)")
    return [p.name for p in parameters]


def build(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; ``overrides`` go to its builder (e.g. ``width=0.25``).

    Every builder takes the same kind of override: input size, width and the family's
    decoding settings. The architecture is the paper row's, so an override the builder does
    not name (``groups=2``) is refused with a ValueError listing the ones it takes.
    """
    check_overrides(name, overrides)
    return info(name).builder(**overrides)


def check_overrides(name: str, overrides: Iterable[str]) -> None:
    """ValueError naming the overrides ``name``'s builder does not take, and those it does."""
    known = settings(name)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ValueError(
            f"model {name!r} takes no override {', '.join(map(repr, unknown))} (a paper row "
            f"fixes its architecture; register your own model to change it); it takes: "
            f"{', '.join(known)}"
        )
