"""DICOM CT series: discovery, grouping by SeriesInstanceUID, geometry checks, HU volumes.

Slices are ordered by ImagePositionPatient projected on the slice normal (row x column
direction cosines), never by file name or InstanceNumber. Every problem raises ``ValueError``
whose message starts with the offending file. Files beside a series that are not usable
DICOM (``unusable``) are named when the series has a gap: such a file is the likelier culprit
than the slice after the gap.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import SegmentationStorage

from benchmark.importer.resample import Volume

#: relative tolerance on slice spacing before a series counts as having a gap or uneven slices
SPACING_TOLERANCE = 0.1
#: mm a slice origin may lie off the line through the first slice along the normal
TILT_TOLERANCE = 0.05
SEG_SOP_CLASS = SegmentationStorage
_GEOMETRY_KEYS = ("Rows", "Columns", "PixelSpacing", "ImageOrientationPatient")


@dataclass
class Series:
    """Headers of one DICOM series (no pixel data read yet).

    ``key`` groups the files: the SeriesInstanceUID, or for files without one (anonymised
    exports) their folder, SeriesNumber and SeriesDescription.
    """

    key: str
    uid: str
    patient_id: str
    files: list[Path]
    description: str = ""
    number: str = ""
    modality: str = ""
    time: str = ""
    localizer: bool = False
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return Path(os.path.commonpath([str(f.parent) for f in self.files]))


@dataclass
class Scan:
    """Everything found under a source folder."""

    series: list[Series] = field(default_factory=list)
    segmentations: list[Path] = field(default_factory=list)
    other: list[Path] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)


def is_dicom(path: Path) -> bool:
    """True when the file carries the DICOM preamble magic ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def scan(root: Path) -> Scan:
    """Walk ``root`` (any nesting, any file names) and group DICOM files into series.

    Non-DICOM files are returned in ``other`` (NIfTI/NRRD volumes are picked from there);
    DICOM SEG objects in ``segmentations``; unreadable headers in ``ignored`` with the reason.
    """
    found = Scan()
    groups: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    for path in files:
        if not is_dicom(path):
            found.other.append(path)
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, EOFError, OSError, ValueError) as err:
            found.ignored.append((str(path), f"unreadable DICOM header ({err})"))
            continue
        if "SOPClassUID" not in ds or "Modality" not in ds:
            found.ignored.append(
                (str(path), "incomplete DICOM header (no SOPClassUID/Modality; truncated file?)")
            )
            continue
        if str(ds.get("SOPClassUID", "")) == SEG_SOP_CLASS:
            found.segmentations.append(path)
            continue
        uid = str(ds.get("SeriesInstanceUID", "")).strip()
        # anonymised files may lack the UID: group them by folder, number and description
        key = uid or f"{path.parent}#{ds.get('SeriesNumber', '')}#{ds.get('SeriesDescription', '')}"
        groups[key].append((path, ds))
    for key, members, label in (
        part for k, m in groups.items() for part in _split_acquisitions(k, m)
    ):
        first = members[0][1]
        found.series.append(
            Series(
                key=key,
                uid=str(first.get("SeriesInstanceUID", "")).strip(),
                patient_id=str(first.get("PatientID", "")).strip(),
                files=[p for p, _ in members],
                description=(str(first.get("SeriesDescription", "")).strip() + label).strip(),
                number=str(first.get("SeriesNumber", "")),
                modality=str(first.get("Modality", "")),
                time=str(first.get("AcquisitionTime", "") or first.get("SeriesTime", "")),
                localizer="LOCALIZER" in [str(v).upper() for v in first.get("ImageType", [])],
                meta={"StudyInstanceUID": str(first.get("StudyInstanceUID", ""))},
            )
        )
    found.series.sort(key=lambda s: (s.patient_id, s.time, s.number, s.key))
    return found


def _split_acquisitions(
    key: str, members: list[tuple[Path, pydicom.Dataset]]
) -> list[tuple[str, list[tuple[Path, pydicom.Dataset]], str]]:
    """Split a series that repeats slice positions over several acquisitions.

    Some multiphase exams store every phase in one series (same SeriesInstanceUID, the
    phases told apart by AcquisitionNumber / AcquisitionTime). Such a series becomes one
    part per acquisition, keyed ``UID#acqN``; anything else stays whole (and a genuine
    duplicate slice is reported when the series is read).
    """
    positions = [
        tuple(np.round(np.asarray(ds.get("ImagePositionPatient", [0, 0, 0]), float), 2))
        for _, ds in members
    ]
    if len(set(positions)) == len(positions):
        return [(key, members, "")]
    parts: dict[str, list[tuple[Path, pydicom.Dataset]]] = defaultdict(list)
    for path, ds in members:
        acquisition = str(ds.get("AcquisitionNumber", "") or ds.get("AcquisitionTime", ""))
        parts[acquisition].append((path, ds))
    if len(parts) < 2:
        return [(key, members, "")]
    return [(f"{key}#acq{a}", m, f" (acquisition {a})") for a, m in sorted(parts.items())]


def read_series(
    files: list[Path], uid: str = "", unusable: list[tuple[Path, str]] | None = None
) -> Volume:
    """Read one CT series as a ``[slice, row, column]`` HU volume with its LPS affine.

    ``unusable`` lists ``(file, reason)`` of files in the series' folder that could not be
    read as DICOM; a gap in the slice positions is then reported on them.
    """
    headers = [(Path(f), _read_header(Path(f))) for f in files]
    first_path, first = headers[0]
    for path, ds in headers:
        _check_ct_slice(path, ds)
        for key in _GEOMETRY_KEYS:
            if not np.allclose(_floats(ds, key, path), _floats(first, key, first_path), atol=1e-4):
                raise ValueError(
                    f"{path}: {key} {ds.get(key)} differs from {first_path.name} "
                    f"({first.get(key)}); mixed series under one SeriesInstanceUID {uid}"
                )
    iop = _floats(first, "ImageOrientationPatient", first_path)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([_floats(ds, "ImagePositionPatient", p) for p, ds in headers])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    headers = [headers[i] for i in order]
    positions, along = positions[order], along[order]
    spacing = _slice_spacing(headers, along, first, unusable or [])
    offsets = positions - positions[0] - np.outer(along - along[0], normal)
    tilted = np.linalg.norm(offsets, axis=1) > TILT_TOLERANCE * max(1.0, spacing)
    if tilted.any():
        raise ValueError(
            f"{headers[int(np.argmax(tilted))][0]}: slice origins do not lie along the slice "
            "normal (gantry tilt or sheared series); not supported"
        )
    row_spacing, col_spacing = _floats(first, "PixelSpacing", first_path)
    affine = np.eye(4)
    affine[:3, 0] = normal * spacing
    affine[:3, 1] = col_dir * row_spacing
    affine[:3, 2] = row_dir * col_spacing
    affine[:3, 3] = positions[0]
    array = np.stack([_hu_slice(path, ds) for path, ds in headers])
    return Volume(
        array=array,
        affine=affine,
        source=str(headers[0][0]),
        meta={
            "series_uid": uid or str(first.get("SeriesInstanceUID", "")),
            "files": len(headers),
            "slice_files": [str(path) for path, _ in headers],
        },
    )


def _read_header(path: Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as err:
        raise ValueError(f"{path}: not a readable DICOM file ({err})") from None


def _check_ct_slice(path: Path, ds: pydicom.Dataset) -> None:
    modality = str(ds.get("Modality", ""))
    if modality != "CT":
        raise ValueError(f"{path}: modality {modality or 'missing'}, expected CT")
    if "PixelData" not in ds:
        raise ValueError(f"{path}: no pixel data")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError(
            f"{path}: multi-frame (enhanced) CT is not supported; export single-frame slices"
        )
    for key in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        if key not in ds:
            raise ValueError(f"{path}: no {key}; cannot place the slice in space")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise ValueError(f"{path}: {ds.SamplesPerPixel} samples per pixel, expected greyscale CT")


def _floats(ds: pydicom.Dataset, key: str, path: Path) -> np.ndarray:
    try:
        return np.array([float(v) for v in np.atleast_1d(ds[key].value)])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: missing or malformed {key}") from None


def _slice_spacing(
    headers: list[tuple[Path, pydicom.Dataset]],
    along: np.ndarray,
    first: pydicom.Dataset,
    unusable: list[tuple[Path, str]],
) -> float:
    """Spacing between slice centres; raises on duplicates, gaps and uneven spacing."""
    if len(along) == 1:
        value = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
        if not value:
            raise ValueError(f"{headers[0][0]}: single slice without SliceThickness")
        return float(value)
    steps = np.diff(along)
    if np.any(steps < 1e-3):
        i = int(np.argmax(steps < 1e-3))
        raise ValueError(
            f"{headers[i + 1][0]}: same slice position as {headers[i][0].name} "
            f"({along[i]:.2f} mm); duplicate slice or mixed series"
        )
    spacing = float(np.median(steps))
    bad = np.abs(steps - spacing) > SPACING_TOLERANCE * spacing
    if bad.any():
        i = int(np.argmax(bad))
        kind = "gap" if steps[i] > spacing else "uneven spacing"
        if kind == "gap" and unusable:
            bad_file, reason = unusable[0]
            more = f" (and {len(unusable) - 1} more such files)" if len(unusable) > 1 else ""
            raise ValueError(
                f"{bad_file}: {reason}{more}; the series beside it has a gap of "
                f"{steps[i]:.2f} mm between {headers[i][0].name} and {headers[i + 1][0].name} "
                f"(spacing {spacing:.2f} mm), where this file probably belongs"
            )
        raise ValueError(
            f"{headers[i + 1][0]}: {kind} in slice positions: {steps[i]:.2f} mm after "
            f"{headers[i][0].name} where the series spacing is {spacing:.2f} mm (missing slices?)"
        )
    return spacing


def _hu_slice(path: Path, ds: pydicom.Dataset) -> np.ndarray:
    """Pixel data with RescaleSlope/Intercept applied (float32 HU)."""
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if syntax is not None and syntax.is_compressed:
        decoder = get_decoder(syntax)
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a pixel data plugin"
            raise ValueError(
                f"{path}: pixel data compressed as {syntax.name} and no decoder is installed "
                f"(pip install one of: {needs})"
            )
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises many types for damaged pixel data
        raise ValueError(
            f"{path}: cannot decode pixel data (truncated or damaged file: {err})"
        ) from None
    expected = (int(ds.Rows), int(ds.Columns))
    if pixels.shape != expected:
        raise ValueError(f"{path}: pixel array shape {pixels.shape}, expected {expected}")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
