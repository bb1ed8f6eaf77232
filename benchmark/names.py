"""Names that become folder or file names: checks for trusted names, slugs for untrusted ones.

Patient ids, cohort names and model names end up as path components (``patients/<id>/``,
``RUNS/<cohort>/<variant>/<model>/``). Two rules:

* :func:`check_name` accepts a name only when it is one harmless path component: not empty,
  at most 255 bytes, no ``/``, ``\\``, NUL or control character, not starting with ``.``
  (which also excludes ``.`` and ``..`` and the temporary ``.<name>.*.tmp`` entries of
  :func:`benchmark.atomic.atomic_path`). Every reader and writer of cohorts and run folders
  applies it, so no name can lead a path out of its folder.
* :func:`slug` turns an untrusted id (a DICOM PatientID, a folder name, a phase-map entry)
  into a portable folder name: characters outside ``[A-Za-z0-9._-]`` become ``_``, leading
  and trailing ``.``, ``_`` and ``-`` are dropped and the result is at most 64 characters.
  Whenever this changed the id, ``-`` plus the first 8 hex digits of the SHA-256 of the
  original id is appended, so ids that differ only in dropped characters stay apart.
  :func:`slugs` does this for a whole cohort and also separates ids that differ only in case
  (one folder on case-insensitive file systems).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable

SLUG_MAX = 64
HASH_DIGITS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` when it is one harmless path component, else raise ``ValueError``."""
    problem = _problem(name)
    if problem:
        raise ValueError(f"{what} {name!r}: {problem}")
    return name


def is_safe_name(name: str) -> bool:
    """True when :func:`check_name` accepts ``name``."""
    return not _problem(name)


def _problem(name: str) -> str:
    if not isinstance(name, str) or not name:
        return "must be a non-empty text"
    if "/" in name or "\\" in name:
        return "must not contain '/' or '\\'"
    if _CONTROL.search(name):
        return "must not contain control characters"
    if name.startswith("."):
        return "must not start with '.'"
    if len(name.encode("utf-8", "surrogateescape")) > 255:
        return "is longer than 255 bytes"
    return ""


def slug(original: str) -> str:
    """The portable folder name of an untrusted id (see the module docstring)."""
    text = _UNSAFE.sub("_", original).strip("._-")
    if text and text == original and len(text) <= SLUG_MAX:
        return text
    return _with_hash(text, original)


def slugs(originals: Iterable[str]) -> dict[str, str]:
    """``{original: folder name}`` for a set of ids, distinct even on case-insensitive disks.

    Ids whose slugs differ only in case all get the hash suffix. Raises ``ValueError`` naming
    the ids in the (contrived) case where two still coincide.
    """
    out = {original: slug(original) for original in dict.fromkeys(originals)}
    by_folded: dict[str, list[str]] = defaultdict(list)
    for original, name in out.items():
        by_folded[name.casefold()].append(original)
    for group in by_folded.values():
        if len(group) > 1:
            for original in group:
                if out[original] == original:
                    out[original] = _with_hash(original, original)
    seen: dict[str, str] = {}
    for original, name in out.items():
        other = seen.setdefault(name.casefold(), original)
        if other != original:
            raise ValueError(
                f"ids {other!r} and {original!r} give the same folder name {name!r}; "
                "rename one (e.g. with --phase-map)"
            )
    return out


def _with_hash(text: str, original: str) -> str:
    digest = hashlib.sha256(original.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_DIGITS]
    head = text[: SLUG_MAX - HASH_DIGITS - 1].rstrip("._-") or "id"
    return f"{head}-{digest}"
