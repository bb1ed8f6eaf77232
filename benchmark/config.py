"""Profiles: plain JSON run settings a user can copy, edit and override from the CLI.

A profile is a name of a file in ``benchmark/profiles/`` (``paper``, ``quick``, ``smoke``) or a
path to a JSON file of the same shape. ``--set section.key=value`` overrides any existing field
(values parse as JSON, else stay strings); ``detector.overrides.<name>`` is free-form and goes to
the model builder. The result is checked against the schema (:mod:`benchmark.settings`: types,
ranges, rules between settings) before anything is written. The resolved config (profile +
overrides + cohort, variant, model, seed) is saved as ``config.json`` in every run folder.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from benchmark.atomic import read_json

PROFILE_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "quick"
SECTIONS = ("phantom", "registration", "detector", "train", "eval", "seeds")
FREE_FORM = ("detector.overrides",)


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.json"))


def load_profile(name_or_path: str | Path = DEFAULT_PROFILE) -> dict[str, Any]:
    """Read a profile by name or path; the result records where it came from in ``profile``."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.exists()):
        if text not in profile_names():
            raise ValueError(
                f"unknown profile {text!r}; use one of {', '.join(profile_names())} or a path "
                "to a JSON file"
            )
        path = PROFILE_DIR / f"{text}.json"
    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a profile must be a JSON object")
    missing = [s for s in SECTIONS if s not in config]
    if missing:
        raise ValueError(f"{path}: profile lacks sections {missing} (copy a built-in profile)")
    config["profile"] = text if path.parent == PROFILE_DIR else str(path.resolve())
    return config


def profile_label(profile: str | None) -> str:
    """How captions name a recorded ``profile``: a built-in one by its name, a file by its file
    name (the run folders keep the full path)."""
    return Path(profile).name if profile else "not recorded"


class Override(NamedTuple):
    """One ``KEY=VALUE`` assignment; ``label`` is the option that gave it as the user typed it
    (e.g. ``--iterations -5``), named in error messages (default ``--set KEY=VALUE``)."""

    assignment: str
    label: str | None = None

    def __str__(self) -> str:
        return self.label or f"--set {self.assignment}"


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(
    config: dict[str, Any],
    assignments: Iterable[str | Override],
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Return a copy of ``config`` with ``key.path=value`` assignments applied.

    Only existing keys may be set (typos are errors that list the valid keys), except below
    ``detector.overrides`` where any builder argument may be given. ``sources`` (when given)
    receives the option that set each dotted key.
    """
    out = copy.deepcopy(config)
    for item in assignments:
        item = item if isinstance(item, Override) else Override(item)
        assignment = item.assignment
        key, sep, value = assignment.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {assignment!r}: expected KEY=VALUE, e.g. "
                             "train.iterations=200")
        parts = key.strip().split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[: depth + 1])
            if not isinstance(node.get(part), dict):
                raise ValueError(f"--set {key}: {prefix!r} is not a section of the profile")
            node = node[part]
        leaf = parts[-1]
        parent = ".".join(parts[:-1])
        if leaf not in node and parent not in FREE_FORM:
            raise ValueError(
                f"--set {key}: unknown key {leaf!r}; valid keys here: {', '.join(sorted(node))}"
            )
        node[leaf] = _parse_value(value.strip())
        if sources is not None:
            sources[".".join(parts)] = str(item)
    return out


def resolve(
    profile: str | Path, assignments: Iterable[str | Override] = (), **fields: Any
) -> dict[str, Any]:
    """Profile + ``--set`` overrides, validated, + top-level fields (cohort, variant, model,
    seed, ...); a ValueError names each bad setting and the option or file it came from."""
    from benchmark.settings import check  # pydantic: imported when a command needs it

    loaded = load_profile(profile)
    sources: dict[str, str] = {}
    config = apply_overrides(loaded, assignments, sources)
    check(config, f"profile {loaded['profile']}", sources)
    config.update({k: v for k, v in fields.items() if v is not None})
    return config
