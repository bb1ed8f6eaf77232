"""Phase assignment: a mapping file, or keywords in series descriptions plus acquisition order.

Mapping file (CSV with a header row ``patient,source,phase``): ``source`` is a
SeriesInstanceUID, a SeriesNumber, a SeriesDescription, or a file/folder path (absolute or
relative to the import source); ``phase`` is one of the four phases, or ``lesion[:PHASE]`` /
``liver:PHASE`` for a mask file drawn on that phase. One source may serve several phases.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark import PHASES

_KEYWORDS = {
    "precontrast": r"\b(pre|precontrast|pre[-_ ]contrast|native|non[-_ ]?contrast|nc|unenhanced|plain)\b",
    "arterial": r"\b(arterial|art|ap|hap|lap)\b",
    "portal": r"\b(portal|porto[-_ ]?venous|venous|pv|pvp)\b",
    "delayed": r"\b(delayed|delay|equilibrium|eq|late)\b",
}
MASK_ROLES = ("lesion", "liver")


@dataclass(frozen=True)
class MapEntry:
    """One row of the mapping file: ``role`` is ``image``, ``lesion`` or ``liver``."""

    patient: str
    source: str
    role: str
    phase: str | None
    line: int


def keyword_phase(description: str) -> str | None:
    """The phase a series description names, or ``None`` when none or several match.

    ``late`` alone means delayed, but ``late arterial`` is arterial.
    """
    text = description.lower().replace("_", " ")
    hits = [phase for phase, pattern in _KEYWORDS.items() if re.search(pattern, text)]
    if (
        "arterial" in hits
        and "delayed" in hits
        and not re.search(r"\b(delayed|delay|equilibrium|eq)\b", text)
    ):
        hits.remove("delayed")
    return hits[0] if len(hits) == 1 else None


def assign_phases(candidates: Sequence[tuple[str, str, str]]) -> dict[str, str]:
    """Map phase -> candidate key from ``(key, description, acquisition_time)`` triples.

    Keywords decide first; candidates without a keyword fill the missing phases in
    acquisition order (pre-contrast, arterial, portal, delayed is the order in which the
    phases are acquired) when their number equals the number of missing phases and their
    times fit between the keyword-assigned ones. Raises ``ValueError`` explaining what is
    ambiguous or missing.
    """
    assigned: dict[str, str] = {}
    unknown: list[tuple[str, str, str]] = []
    for key, description, time in candidates:
        phase = keyword_phase(description)
        if phase is None:
            unknown.append((key, description, time))
        elif phase in assigned:
            raise ValueError(
                f"two series look {phase}: {assigned[phase]!r} and {key!r} ({description!r}); "
                "pass --phase-map to choose"
            )
        else:
            assigned[phase] = key
    missing = [p for p in PHASES if p not in assigned]
    if missing and not unknown:
        raise ValueError(f"no series for {missing}; every patient needs all four phases")
    if len(unknown) != len(missing):
        names = [f"{k!r} ({d!r})" for k, d, _ in unknown]
        raise ValueError(
            f"keywords found phases {sorted(assigned, key=PHASES.index)}; {len(unknown)} series "
            f"without a phase keyword {names} cannot fill the missing {missing}; pass --phase-map"
        )
    if unknown and any(not t for _, _, t in unknown):
        raise ValueError(
            f"series {[k for k, _, t in unknown if not t]} have no acquisition time; pass --phase-map"
        )
    times = {k: t for k, _, t in candidates}
    for phase, (key, _, _) in zip(missing, sorted(unknown, key=lambda c: c[2]), strict=True):
        assigned[phase] = key
    ordered = [times[assigned[p]] for p in PHASES]
    if all(ordered) and ordered != sorted(ordered):
        raise ValueError(
            f"phases {dict((p, assigned[p]) for p in PHASES)} are not in acquisition order "
            f"(times {ordered}); pass --phase-map"
        )
    return {p: assigned[p] for p in PHASES}


def read_phase_map(path: Path) -> list[MapEntry]:
    """Parse the mapping CSV; errors name the file and line."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: phase map not found") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["patient", "source", "phase"]:
        raise ValueError(f"{path}: first line must be the header 'patient,source,phase'")
    entries = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 3:
            raise ValueError(f"{path}:{line}: expected 3 columns patient,source,phase")
        patient, source, value = (c.strip() for c in row[:3])
        role, _, phase = value.lower().partition(":")
        if role in PHASES and not phase:
            entries.append(MapEntry(patient, source, "image", role, line))
        elif role in MASK_ROLES and (phase in PHASES or (role == "lesion" and not phase)):
            entries.append(MapEntry(patient, source, role, phase or None, line))
        else:
            raise ValueError(
                f"{path}:{line}: phase {value!r} must be one of {list(PHASES)}, 'lesion', "
                "'lesion:PHASE' or 'liver:PHASE'"
            )
    return entries


def phase_in_name(name: str) -> str | None:
    """A phase named in a file or folder name (``liver_arterial.nii.gz``), if exactly one."""
    text = re.sub(r"[^a-z0-9]+", " ", name.lower())
    hits = [p for p in PHASES if re.search(rf"\b{p}\b", text)]
    return hits[0] if len(hits) == 1 else keyword_phase(text)
