"""Assemble four-phase patients from DICOM / NIfTI / NRRD sources and write a cohort.

Per patient: the four phase volumes are read, the portal volume is put on the axis-aligned
LPS cohort grid (transpose/flip only), every other phase is resampled onto that grid by
physical coordinates (trilinear, air = -1024 HU outside its field of view) and the masks
with nearest neighbour. This is also the paper's *axial alignment step* (phases cropped to
the same physical z range from ImagePositionPatient): sampling every phase at the portal
slice positions crops and aligns them in z by construction.

A patient that fails is reported and skipped; the cohort keeps the others. Patients are
written atomically by :class:`~benchmark.cohort.CohortWriter` and ``import_report.json``
plus the manifest come last, so ``--out`` never holds half-written files.

Input names are untrusted: a patient id (DICOM PatientID, folder name, phase-map entry)
becomes a folder name only through :func:`benchmark.names.slugs`; the original id is kept in
the report, in ``patient.json`` (``meta.import.source_id``) and in the manifest's provenance.
Nothing is dropped silently: every file that is neither usable DICOM nor a NIfTI/NRRD
volume is listed in the report, NaN/Inf voxels are an error unless ``fill_nonfinite`` says
what to put there, and an empty lesion mask skips its patient.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.errors import InvalidDicomError

from benchmark import FIXED_PHASE, PHASES
from benchmark.atomic import write_json
from benchmark.cohort import CohortError, CohortWriter, Patient, assign_splits
from benchmark.importer import dicom
from benchmark.importer.phases import MapEntry, assign_phases, phase_in_name, read_phase_map
from benchmark.importer.resample import (
    Volume,
    coverage,
    grid_affine,
    labelled_outside,
    resample,
    to_lps_grid,
)
from benchmark.importer.volumes import check_finite, is_volume_file, read_mask, read_volume, stem
from benchmark.names import check_name, slugs

REPORT = "import_report.json"
AIR_HU = -1024.0
NOT_AN_IMAGE = "neither a DICOM file (no 'DICM' marker at byte 128) nor a NIfTI/NRRD volume"
_MASK_WORDS = ("seg", "mask", "label", "lesion", "liver", "tumor", "tumour")


@dataclass
class ImportOptions:
    """Options of ``data import`` (see its ``--help``)."""

    phase_map: Path | None = None
    lesion_masks: list[Path] = field(default_factory=list)
    liver_masks: list[Path] = field(default_factory=list)
    lesion_label: int | None = None
    liver_label: int | None = None
    lesion_phase: str = FIXED_PHASE
    seed: int = 0
    name: str | None = None
    overwrite: bool = False
    fill_nonfinite: float | None = None

    def params(self, src: Path) -> dict[str, Any]:
        extra = {} if self.fill_nonfinite is None else {"fill_nonfinite": self.fill_nonfinite}
        return {
            **extra,
            "source": str(src.resolve()),
            "phase_map": str(self.phase_map.resolve()) if self.phase_map else None,
            "lesion_masks": [str(p.resolve()) for p in self.lesion_masks],
            "liver_masks": [str(p.resolve()) for p in self.liver_masks],
            "lesion_label": self.lesion_label,
            "liver_label": self.liver_label,
            "lesion_phase": self.lesion_phase,
            "seed": self.seed,
        }


@dataclass
class Candidate:
    """An image source that may become one phase of a patient."""

    key: str
    patient: str
    description: str
    time: str
    files: list[Path]
    series: dicom.Series | None = None
    unusable: list[tuple[Path, str]] = field(default_factory=list)
    """files beside the series that are not usable DICOM (named when the series has a gap)"""

    def matches(self, source: str, root: Path) -> bool:
        """Does a phase-map ``source`` name this candidate (UID, number, description, path)?"""
        if (
            self.series is not None
            and source in (self.series.uid, self.series.number, self.series.description)
            and source
        ):
            return True
        path = Path(source) if Path(source).is_absolute() else root / source
        path = path.resolve()
        resolved = [f.resolve() for f in self.files]
        return path in resolved or all(path in f.parents for f in resolved)

    def load(self, fill_nonfinite: float | None, warnings: list[str]) -> Volume:
        """Read the volume; NaN/Inf voxels are an error unless ``fill_nonfinite`` is given."""
        if self.series is not None:
            volume = dicom.read_series(self.files, self.series.uid, self.unusable)
        else:
            volume = read_volume(self.files[0])
        filled = check_finite(volume, fill_nonfinite)
        if filled:
            warnings.append(filled)
        return volume


@dataclass
class MaskSource:
    """A mask file with the role, patient and phase it was matched to."""

    path: Path
    role: str
    patient: str | None = None
    phase: str | None = None


def import_cohort(src: str | Path, out: str | Path, options: ImportOptions) -> dict[str, Any]:
    """Import every patient under ``src`` into the cohort folder ``out``; return the report."""
    src, out = Path(src), Path(out)
    if not src.exists():
        raise FileNotFoundError(f"{src}: import source not found")
    if options.fill_nonfinite is not None and not np.isfinite(options.fill_nonfinite):
        raise ValueError(f"--fill-nonfinite {options.fill_nonfinite}: must be a finite HU value")
    existed = out.exists()
    fresh = not existed or not any(out.iterdir())
    entries = read_phase_map(options.phase_map) if options.phase_map else []
    mask_paths = {p.resolve() for p in _expand(options.lesion_masks + options.liver_masks)}
    mask_paths |= {
        _map_path(e, src, options.phase_map).resolve() for e in entries if e.role != "image"
    }
    found = dicom.scan(src)
    skipped: list[dict[str, str]] = [{"item": f, "reason": r} for f, r in found.ignored]
    not_used = mask_paths | ({options.phase_map.resolve()} if options.phase_map else set())
    skipped += [
        {"item": str(path), "reason": f"not used: {NOT_AN_IMAGE}"}
        for path in found.other
        if not is_volume_file(path) and path.resolve() not in not_used
    ]
    skipped += [
        {
            "item": str(seg),
            "reason": "DICOM SEG: used only when given with --lesion-masks/--liver-masks",
        }
        for seg in found.segmentations
        if seg.resolve() not in mask_paths
    ]
    candidates = _candidates(src, found, mask_paths, skipped)
    images = [e for e in entries if e.role == "image"]
    claimed = {c.key for c in candidates for e in images if c.matches(e.source, src)}
    patients = sorted(
        {c.patient for c in candidates if c.key not in claimed} | {e.patient for e in images}
    )
    ids = slugs(patients)
    masks = _masks(options, entries, src, patients, ids, candidates, skipped)
    splits = assign_splits(patients, options.seed) if patients else {}
    name = options.name or out.resolve().name
    try:
        check_name(name, "cohort name")
    except ValueError as err:
        raise ValueError(f"{err} (choose one with --name)") from None
    renamed = {cid: pid for pid, cid in ids.items() if cid != pid}
    writer = CohortWriter(
        out,
        name=name,
        kind="imported",
        params=options.params(src),
        provenance={
            "source": str(src.resolve()),
            "importer": "benchmark.importer",
            "source_ids": renamed,
        },
        overwrite=options.overwrite,
    )
    done = writer.done()
    report: dict[str, Any] = {"source": str(src.resolve()), "patients": {}, "skipped": skipped}
    for pid in patients:
        cid = ids[pid]
        if cid in done:
            report["patients"][cid] = {"status": "already imported", "source_id": pid}
            continue
        try:
            patient, summary = _build_patient(
                pid, src, candidates, claimed, entries, masks, options
            )
        except (ValueError, OSError, CohortError) as err:
            named = f"patient {cid}" + (f" (source id {pid!r})" if cid != pid else "")
            skipped.append({"item": named, "reason": str(err)})
            continue
        patient.id, patient.split = cid, splits[pid]
        writer.write_patient(patient)
        report["patients"][cid] = summary
    if not writer.done():
        if fresh:  # leave --out as it was before: absent or empty
            shutil.rmtree(out, ignore_errors=True)
            if existed:
                out.mkdir()
        reasons = "; ".join(f"{s['item']}: {s['reason']}" for s in skipped) or "no images found"
        raise ValueError(f"{src}: no patient could be imported ({reasons})")
    write_json(out / REPORT, report)
    writer.finish()
    return report


# ----------------------------------------------------------------------------- discovery


def _expand(paths: list[Path], role: str | None = None) -> list[Path]:
    """Mask files under the given files/folders: NIfTI/NRRD volumes and DICOM SEG objects.

    In folders, files whose names name the other role (``liver`` for lesion masks,
    ``lesion``/``tumo(u)r`` for liver masks) are left out.
    """
    other = {"lesion": ("liver",), "liver": ("lesion", "tumor", "tumour")}.get(role or "", ())
    files: list[Path] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: mask file or folder not found")
        if path.is_file():
            files.append(path)
            continue
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            if any(word in f.name.lower() for word in other):
                continue
            if is_volume_file(f) or (dicom.is_dicom(f) and _is_seg(f)):
                files.append(f)
    return files


def _is_seg(path: Path) -> bool:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # unreadable files are reported when used as images
        return False
    return str(ds.get("SOPClassUID", "")) == dicom.SEG_SOP_CLASS


def _map_path(entry: MapEntry, src: Path, phase_map: Path | None) -> Path:
    """A mask file named in the phase map: absolute, relative to SRC, or to the map's folder."""
    root = src if src.is_dir() else src.parent
    for path in (
        Path(entry.source),
        root / entry.source,
        (phase_map or root).parent / entry.source,
    ):
        if path.is_file():
            return path
    raise FileNotFoundError(f"{phase_map}:{entry.line}: mask file {entry.source} not found")


def _patient_from_path(path: Path, src: Path) -> str:
    """Patient id of a file without PatientID: its first subfolder under ``src``."""
    root = src if src.is_dir() else src.parent
    parts = path.resolve().relative_to(root.resolve()).parts
    return parts[0] if len(parts) > 1 else root.resolve().name


def _candidates(
    src: Path, found: dicom.Scan, mask_paths: set[Path], skipped: list[dict[str, str]]
) -> list[Candidate]:
    out = []
    unusable: dict[Path, list[tuple[Path, str]]] = defaultdict(list)
    for item, reason in found.ignored:
        unusable[Path(item).parent].append((Path(item), reason))
    for path in found.other:
        if not is_volume_file(path):
            unusable[path.parent].append((path, NOT_AN_IMAGE))
    for series in found.series:
        where = str(series.folder)
        if series.modality != "CT":
            skipped.append(
                {
                    "item": str(series.files[0]),
                    "reason": f"modality {series.modality or 'missing'}, expected CT (series {where} ignored)",
                }
            )
            continue
        if series.localizer:
            skipped.append({"item": where, "reason": "localizer (scout) series ignored"})
            continue
        patient = series.patient_id or _patient_from_path(series.files[0], src)
        folders = sorted({f.parent for f in series.files})
        beside = sorted(u for folder in folders for u in unusable.get(folder, []))
        out.append(
            Candidate(
                series.key,
                patient,
                series.description,
                series.time,
                series.files,
                series,
                beside,
            )
        )
    for path in found.other:
        if not is_volume_file(path) or path.resolve() in mask_paths:
            continue
        if any(word in stem(path).lower() for word in _MASK_WORDS):
            skipped.append(
                {
                    "item": str(path),
                    "reason": "looks like a mask; pass it with --lesion-masks or --liver-masks",
                }
            )
            continue
        root = src if src.is_dir() else src.parent
        key = str(path.resolve().relative_to(root.resolve()))
        out.append(Candidate(key, _patient_from_path(path, src), stem(path), "", [path]))
    return out


def _masks(
    options: ImportOptions,
    entries: list[MapEntry],
    src: Path,
    patients: list[str],
    ids: dict[str, str],
    candidates: list[Candidate],
    skipped: list[dict[str, str]],
) -> list[MaskSource]:
    """Match every mask file to a patient and the phase it was drawn on."""
    found = [MaskSource(p, "lesion") for p in _expand(options.lesion_masks, "lesion")]
    found += [MaskSource(p, "liver") for p in _expand(options.liver_masks, "liver")]
    for e in (e for e in entries if e.role != "image"):
        path = _map_path(e, src, options.phase_map)
        found = [m for m in found if not (m.path.resolve() == path.resolve() and m.role == e.role)]
        found.append(MaskSource(path, e.role, e.patient, e.phase or options.lesion_phase))
    series_owner = {
        c.series.uid: c.patient for c in candidates if c.series is not None and c.series.uid
    }
    for mask in found:
        if mask.patient is None:
            try:
                mask.patient = _mask_patient(mask.path, patients, ids, series_owner)
            except (ValueError, OSError, InvalidDicomError) as err:
                skipped.append(
                    {"item": str(mask.path), "reason": f"{mask.role} mask: unreadable ({err})"}
                )
                continue
        if mask.patient is None:
            skipped.append(
                {
                    "item": str(mask.path),
                    "reason": f"{mask.role} mask: cannot tell which patient it belongs to (name it after the patient or list it in --phase-map)",
                }
            )
    return [m for m in found if m.patient is not None]


def _mask_patient(
    path: Path, patients: list[str], ids: dict[str, str], series_owner: dict[str, str]
) -> str | None:
    """The (source) id of the patient a mask belongs to; names match source ids or folder names."""
    by_folder = {cid: pid for pid, cid in ids.items()}
    if dicom.is_dicom(path):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for ref in ds.get("ReferencedSeriesSequence", []):
            if str(ref.SeriesInstanceUID) in series_owner:
                return series_owner[str(ref.SeriesInstanceUID)]
        if str(ds.get("PatientID", "")) in patients:
            return str(ds.PatientID)
    for name in (stem(path), *(p.name for p in path.parents)):
        if name in patients:
            return name
        if name in by_folder:
            return by_folder[name]
    return patients[0] if len(patients) == 1 else None


# ----------------------------------------------------------------------------- one patient


def _choose_phases(
    pid: str, src: Path, candidates: list[Candidate], claimed: set[str], entries: list[MapEntry]
) -> dict[str, Candidate]:
    """The series/file of each phase: from the phase map, else keywords and acquisition order.

    Series the phase map assigns (to any patient) are not used for keyword assignment.
    """
    mine = [c for c in candidates if c.patient == pid and c.key not in claimed]
    rows = [e for e in entries if e.patient == pid and e.role == "image"]
    if rows:
        chosen: dict[str, Candidate] = {}
        for e in rows:
            hits = [c for c in candidates if c.matches(e.source, src)]
            if len(hits) > 1:
                hits = [c for c in hits if c.patient == pid] or hits
            if len(hits) != 1:
                raise ValueError(
                    f"phase map line {e.line}: source {e.source!r} matches {len(hits)} series/files "
                    "(expected exactly one)"
                )
            if e.phase in chosen:
                raise ValueError(f"phase map line {e.line}: phase {e.phase} given twice")
            chosen[e.phase] = hits[0]  # type: ignore[index]
        missing = [p for p in PHASES if p not in chosen]
        if missing:
            raise ValueError(f"phase map gives no {missing}; every patient needs all four phases")
        return chosen
    if not mine:
        raise ValueError("no CT series or volume found")
    by_key = {c.key: c for c in mine}
    try:
        keys = assign_phases([(c.key, c.description, c.time) for c in mine])
    except ValueError as err:
        found = [f"{c.description or c.key!r}" for c in mine]
        raise ValueError(f"{len(mine)} series found ({', '.join(found)}): {err}") from None
    return {p: by_key[k] for p, k in keys.items()}


def _build_patient(
    pid: str,
    src: Path,
    candidates: list[Candidate],
    claimed: set[str],
    entries: list[MapEntry],
    masks: list[MaskSource],
    options: ImportOptions,
) -> tuple[Patient, dict[str, Any]]:
    chosen = _choose_phases(pid, src, candidates, claimed, entries)
    warnings: list[str] = []
    portal = chosen[FIXED_PHASE].load(options.fill_nonfinite, warnings)
    portal_array, spacing, origin = to_lps_grid(portal)
    shape = portal_array.shape
    target = grid_affine(spacing, origin)
    phases: dict[str, np.ndarray] = {}
    phase_info: dict[str, Any] = {}
    for phase in (FIXED_PHASE, *(p for p in PHASES if p != FIXED_PHASE)):
        cand = chosen[phase]
        same = next((p for p in phases if chosen[p].key == cand.key), None)
        if same is not None:  # one source serving several phases is read once
            phases[phase], phase_info[phase] = phases[same], phase_info[same]
            continue
        if phase == FIXED_PHASE:
            volume, array, fov = portal, portal_array.astype(np.float32), 1.0
            how = "reoriented to LPS (transpose/flip only, no interpolation)"
        else:
            volume = cand.load(options.fill_nonfinite, warnings)
            array = resample(volume, shape, target, order=1, cval=AIR_HU)
            fov = coverage(volume, shape, target)
            how = "resampled onto the portal grid (trilinear, -1024 HU outside its field of view)"
        phases[phase] = array
        phase_info[phase] = {
            "source": str(cand.series.folder) if cand.series else str(cand.files[0]),
            "files": len(cand.files),
            "series_uid": (cand.series.uid or None) if cand.series else None,
            "study_uid": cand.series.meta.get("StudyInstanceUID") if cand.series else None,
            "description": cand.description,
            "acquisition_time": cand.time,
            "original_spacing": [round(s, 4) for s in volume.spacing],
            "original_shape": list(volume.array.shape),
            "geometry": how,
            "fov_coverage": round(fov, 4),
            "hu_range": [float(np.min(array)), float(np.max(array))],
        }
    voxel_ml = float(np.prod(spacing)) / 1000.0
    mine = [m for m in masks if m.patient == pid]
    lesion, lesion_phase, lesion_info = _place_masks(
        [m for m in mine if m.role == "lesion"],
        "lesion",
        options.lesion_label,
        options.lesion_phase,
        chosen,
        shape,
        target,
        warnings,
    )
    if lesion is None:
        raise ValueError("no lesion mask (give --lesion-masks or list one in --phase-map)")
    if not lesion.any():
        raise ValueError(
            f"{', '.join(lesion_info['source'])}: lesion mask is empty (no labelled voxel on "
            "the portal grid); a patient without a lesion cannot be evaluated"
        )
    liver: dict[str, np.ndarray] = {}
    liver_info: dict[str, Any] = {}
    for phase in PHASES:
        drawn = [
            m for m in mine if m.role == "liver" and _mask_phase(m, FIXED_PHASE, chosen) == phase
        ]
        arr, _, info = _place_masks(
            drawn, "liver", options.liver_label, phase, chosen, shape, target, warnings
        )
        if arr is not None:
            liver[phase] = arr
            liver_info[phase] = {
                **info,
                "voxels": int(arr.sum()),
                "volume_ml": round(float(arr.sum()) * voxel_ml, 3),
            }
    summary = {
        "source_id": pid,
        "shape": list(shape),
        "spacing": list(spacing),
        "origin": list(origin),
        "phases": {p: phase_info[p] for p in PHASES},
        "lesion_phase": lesion_phase,
        "lesion": {
            **lesion_info,
            "voxels": int(lesion.sum()),
            "volume_ml": round(float(lesion.sum()) * voxel_ml, 3),
        },
        "liver": liver_info,
        "warnings": warnings,
    }
    patient = Patient(
        id=pid,
        phases=phases,
        lesion=lesion,
        lesion_phase=lesion_phase,
        spacing=spacing,
        origin=origin,
        liver=liver or None,
        meta={"import": summary},
    )
    return patient, summary


def _mask_phase(mask: MaskSource, default: str, chosen: dict[str, Candidate]) -> str:
    """Phase a mask was drawn on: explicit, the SEG's referenced series, its file name, or default."""
    if mask.phase:
        return mask.phase
    if dicom.is_dicom(mask.path):
        import pydicom

        ds = pydicom.dcmread(mask.path, stop_before_pixels=True)
        refs = [str(r.SeriesInstanceUID) for r in ds.get("ReferencedSeriesSequence", [])]
        phases = [p for p, c in chosen.items() if c.series is not None and c.series.uid in refs]
        if phases:
            return default if default in phases else phases[0]
    return phase_in_name(stem(mask.path)) or phase_in_name(mask.path.parent.name) or default


def _place_masks(
    masks: list[MaskSource],
    role: str,
    label: int | None,
    default_phase: str,
    chosen: dict[str, Candidate],
    shape: tuple[int, int, int],
    target: np.ndarray,
    warnings: list[str],
) -> tuple[np.ndarray | None, str, dict[str, Any]]:
    """Union of the masks of one role (all drawn on one phase) on the cohort grid."""
    if not masks:
        return None, default_phase, {}
    phases = {_mask_phase(m, default_phase, chosen) for m in masks}
    if len(phases) > 1:
        raise ValueError(
            f"{role} masks {[str(m.path) for m in masks]} are drawn on different phases {sorted(phases)}"
        )
    out = np.zeros(shape, np.uint8)
    for m in masks:
        out |= place_mask(read_mask(m.path, label), shape, target, warnings)
    return out, phases.pop(), {"source": [str(m.path) for m in masks], "label": label}


def place_mask(
    mask: Volume, shape: tuple[int, int, int], target: np.ndarray, warnings: list[str]
) -> np.ndarray:
    """Resample a binary mask onto the cohort grid (nearest neighbour, physical coordinates).

    Labelled voxels outside the grid are reported in ``warnings``; a mask entirely outside
    is an error: its header (origin or orientation) does not describe the image it was drawn
    on, as with a cropped NIfTI that kept the original origin.
    """
    outside, total = labelled_outside(mask, shape, target)
    if total == 0:
        warnings.append(f"{mask.source}: mask is empty")
    elif outside == total:
        raise ValueError(
            f"{mask.source}: all {total} labelled voxels lie outside the image; its header "
            "(origin/orientation) does not match the image it was drawn on"
        )
    elif outside:
        warnings.append(
            f"{mask.source}: {outside} of {total} labelled voxels lie outside the portal field of view"
        )
    return resample(mask, shape, target, order=0, cval=0).astype(np.uint8)
