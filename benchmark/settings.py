"""The schema of a profile: every setting's type and range, and the rules between settings.

:func:`check` validates a profile (with its ``--set`` overrides applied) before anything is
written, and turns every problem into one line naming the setting and where its value came
from, e.g. ``--set train.lr=abc: train.lr must be a number``. The config itself stays a plain
dict (the one saved as ``config.json``); the models below only check it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

Count = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]
"""numpy takes seeds >= 0, torch below 2**64: the common range"""
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class PhantomSettings(_Section):
    """The synthetic cohort ``run`` makes when no ``--cohort`` is given (ranges of
    :class:`benchmark.phantom.PhantomConfig`; three patients so that each split gets one)."""

    patients: Annotated[int, Field(ge=3)]
    size: Annotated[int, Field(ge=32, le=2048)]
    slices: Annotated[int, Field(ge=3, le=400)]
    motion_mm: Annotated[float, Field(ge=0, le=50)] | None
    seed: Seed
    splits: list[Annotated[int, Field(ge=0)]] | None = None
    workers: Count

    @field_validator("splits")
    @classmethod
    def _splits(cls, value: list[int] | None) -> list[int] | None:
        if value is not None:
            from benchmark.phantom.config import check_splits

            check_splits(value)
        return value


class RegistrationSettings(_Section):
    workers: Count


class DetectorSettings(_Section):
    input_size: Annotated[int, Field(ge=32, le=4096)]
    width: Annotated[float, Field(gt=0, le=8)]
    optimise_anchors: bool
    overrides: dict[str, Any]
    """builder arguments, free-form: each builder checks its own"""


class TrainSettings(_Section):
    iterations: Count
    batch_size: Count
    lr: Annotated[float, Field(gt=0)]
    momentum: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: Annotated[float, Field(ge=0)]
    milestones: list[Count]
    gamma: Annotated[float, Field(gt=0)]
    augment: bool
    expand_ratio: Annotated[float, Field(ge=1, le=8)]
    val_every: Count
    checkpoint_every: Count
    log_every: Count
    select_metrics: Annotated[list[str], Field(min_length=1)]
    device: str
    amp: Literal["none", "bf16"]
    channels_last: bool
    workers: Annotated[int, Field(ge=0)]
    grad_clip: Annotated[float, Field(gt=0)] | None
    threads: Count | None
    cpu_units: Count = 1
    """training units run at once by ``--executor local`` on a machine without a GPU, each in
    its own process with ``threads`` threads"""

    @field_validator("milestones")
    @classmethod
    def _below_iterations(cls, milestones: list[int], info: Any) -> list[int]:
        if milestones != sorted(set(milestones)):
            raise ValueError(f"must be increasing, got {milestones}")
        total = info.data.get("iterations")
        if total is not None and milestones and milestones[-1] >= total:
            raise ValueError(
                f"{milestones} must each be below train.iterations ({total}): lower them, "
                "e.g. --set train.milestones=[...], or [] for a constant LR"
            )
        return milestones

    @field_validator("select_metrics")
    @classmethod
    def _known_metrics(cls, names: list[str]) -> list[str]:
        from benchmark.evaluation import METRIC_KEYS

        unknown = [n for n in names if n not in METRIC_KEYS]
        if unknown:
            raise ValueError(
                f"holds unknown metric {unknown[0]!r}; use {', '.join(METRIC_KEYS)}"
            )
        return names

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not DEVICE.fullmatch(device):
            raise ValueError(f"must be auto, cpu, mps, cuda or cuda:N, got {device!r}")
        return device


class EvalSettings(_Section):
    bootstrap: Annotated[int, Field(ge=0)]
    score_threshold: Annotated[float, Field(ge=0, lt=1)]
    batch_size: Count


class Profile(_Section):
    """A whole profile. ``profile`` (where it came from) is added when it is loaded."""

    description: str = ""
    profile: str = ""
    phantom: PhantomSettings
    registration: RegistrationSettings
    detector: DetectorSettings
    train: TrainSettings
    eval: EvalSettings
    seeds: Annotated[list[Seed], Field(min_length=1)]


RELATED = {"train.milestones": "train.iterations"}
"""a rule between two settings names the first; its value may come from the second"""

_MESSAGES = {
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be a JSON object",
    "model_type": "must be a section (a JSON object)",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be below {lt}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must hold at least {min_length} item(s)",
    "literal_error": "must be {expected}",
}
_KEYS = {"missing": "lacks", "extra_forbidden": "has unknown"}
"""missing and unknown keys are listed per section, in one message each"""


def check(
    config: Mapping[str, Any], origin: str, sources: Mapping[str, str] | None = None
) -> None:
    """Raise ValueError (one line) unless ``config`` is a valid profile.

    ``origin`` names where the profile came from; ``sources`` maps a dotted setting to the
    command-line option that set it (``--set train.lr=abc``), which the message names instead.
    """
    try:
        Profile.model_validate(dict(config))
    except ValidationError as err:
        sources = sources or {}
        keys: dict[tuple[str, str], list[str]] = {}
        problems: dict[str, list[str]] = {}  # by where the value came from
        for error in err.errors():
            if error["type"] in _KEYS:
                *section, key = (str(p) for p in error["loc"])
                keys.setdefault((".".join(section), error["type"]), []).append(key)
            else:
                where, text = _problem(error, origin, sources)
                problems.setdefault(where, []).append(text)
        for (section, kind), names in keys.items():
            where = (_source(section, sources) if section else None) or origin
            problems.setdefault(where, []).append(
                f"{section or 'the profile'} {_KEYS[kind]} settings {', '.join(names)} "
                "(copy a built-in profile for the valid keys)"
            )
        raise ValueError("; ".join(f"{k}: {'; '.join(v)}" for k, v in problems.items())) from None


def check_seeds(seeds: list[int], option: str) -> None:
    """Seeds given on the command line (``--seed``, ``--seeds``) obey the profile's rule."""
    for seed in seeds:
        if not 0 <= seed < 2**63:
            raise ValueError(f"{option} {seed}: a seed must be a whole number from 0 to 2**63-1")


def _problem(error: ErrorDetails, origin: str, sources: Mapping[str, str]) -> tuple[str, str]:
    """Where the bad value came from, and what is wrong with it."""
    name = ".".join(str(p) for p in error["loc"] if isinstance(p, str))
    name += "".join(f"[{p}]" for p in error["loc"] if isinstance(p, int))
    field = ".".join(str(p) for p in error["loc"] if isinstance(p, str))
    source = _source(field, sources) or _source(RELATED.get(field, ""), sources)
    if error["type"] == "value_error":
        text = str(error["ctx"]["error"])
    else:
        text = _MESSAGES.get(error["type"], error["msg"]).format(**error.get("ctx", {}))
    if source is None and error["type"] != "value_error":
        text += f" (got {error['input']!r})"
    return source or origin, f"{name} {text}"


def _source(field: str, sources: Mapping[str, str]) -> str | None:
    """The option that set ``field`` or a section above it (``--set train={...}``)."""
    parts = field.split(".")
    for end in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:end]))
        if found:
            return found
    return None
