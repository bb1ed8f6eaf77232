"""The cohort format: a folder of four-phase patients that every stage reads and writes.

Layout (documented in ``docs/cohort-format.md``)::

    COHORT/
      cohort.json                  manifest, written last: its presence means "complete"
      patients/<id>/patient.json   per-patient metadata, written last inside the folder
      patients/<id>/<phase>.nii.gz HU volumes, int16, one per phase in PHASES
      patients/<id>/lesion.nii.gz  lesion mask (uint8) drawn on ``lesion_phase``
      patients/<id>/liver_<phase>.nii.gz         optional liver masks
      patients/<id>/displacement_<phase>.nii.gz  optional true displacement (synthetic),
                                                 an ITK-readable displacement field
      variants/<variant>/          registered variants, each a cohort in this same format

In memory every volume is a numpy array indexed ``[z, y, x]`` in DICOM patient (LPS) order:
x runs to the patient's left, y to posterior, z to superior. On disk the NIfTI affine says
so (axis codes L, P, S), so 3D Slicer and ITK-SNAP display the volumes correctly.
Patient ids and cohort names are checked with :func:`benchmark.names.check_name` on reading
and writing: none can make a path leave the cohort folder.

Format versions: 2 stores displacement fields as NIfTI displacement vector images (see
:func:`save_displacement`); 1 stored them as plain 4D ``(x, y, z, 3)`` arrays of
``(dz, dy, dx)``. Both are read.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from benchmark.atomic import atomic_path, read_json, write_json
from benchmark.names import check_name
from benchmark.vocabulary import FIXED_PHASE, PHASES
from benchmark.vocabulary import UNREGISTERED as UNREGISTERED

FORMAT_NAME = "phasebench-cohort"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
NIFTI_INTENT_DISPVECT = 1006
"""NIfTI intent code of a displacement vector field (``NIFTI_INTENT_DISPVECT``)."""
MANIFEST = "cohort.json"
PARTIAL_MARKER = ".partial.json"
PATIENT_META = "patient.json"
SPLITS = ("train", "val", "test")


class CohortError(ValueError):
    """A cohort folder is missing, incomplete or malformed; the message names the file."""


@dataclass
class Patient:
    """One patient: four phase volumes in HU plus masks, all on the portal grid.

    ``spacing`` and ``origin`` are in mm in array axis order ``(z, y, x)``; ``origin`` is the
    LPS position of voxel ``[0, 0, 0]``. ``displacement[phase]`` has shape ``(Z, Y, X, 3)`` with
    components ``(dz, dy, dx)`` in mm: the anatomy shown at voxel ``p`` of that phase lies at
    ``p + displacement[p]`` in the portal phase (zero for portal itself).
    """

    id: str
    phases: dict[str, np.ndarray]
    lesion: np.ndarray
    lesion_phase: str
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    split: str = "train"
    liver: dict[str, np.ndarray] | None = None
    displacement: dict[str, np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.phases[FIXED_PHASE].shape)  # type: ignore[return-value]

    def validate(self) -> None:
        """Raise :class:`CohortError` when arrays or fields are inconsistent."""
        missing = [p for p in PHASES if p not in self.phases]
        if missing:
            raise CohortError(f"patient {self.id}: missing phases {missing}")
        shape = self.shape
        if len(shape) != 3:
            raise CohortError(f"patient {self.id}: volumes must be 3D, got shape {shape}")
        arrays = {**self.phases, "lesion": self.lesion}
        arrays.update({f"liver_{k}": v for k, v in (self.liver or {}).items()})
        for name, arr in arrays.items():
            if arr.shape != shape:
                raise CohortError(f"patient {self.id}: {name} has shape {arr.shape}, expected {shape}")
        for name, arr in (self.displacement or {}).items():
            if arr.shape != (*shape, 3):
                raise CohortError(
                    f"patient {self.id}: displacement_{name} has shape {arr.shape}, "
                    f"expected {(*shape, 3)}"
                )
        if self.lesion_phase not in PHASES:
            raise CohortError(f"patient {self.id}: lesion_phase {self.lesion_phase!r} not in {PHASES}")
        if self.split not in SPLITS:
            raise CohortError(f"patient {self.id}: split {self.split!r} not in {SPLITS}")


# ----------------------------------------------------------------------------- NIfTI I/O


def nifti_affine(spacing: tuple[float, float, float], origin: tuple[float, float, float]) -> np.ndarray:
    """RAS affine of an LPS-ordered ``[z, y, x]`` array stored as NIfTI ``(x, y, z)``."""
    sz, sy, sx = spacing
    oz, oy, ox = origin
    affine = np.diag([-sx, -sy, sz, 1.0])
    affine[:3, 3] = [-ox, -oy, oz]
    return affine


def save_volume(
    path: Path,
    array: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> None:
    """Write a ``[z, y, x]`` (or ``[z, y, x, c]``) array as NIfTI with an LPS-correct affine."""
    data = np.ascontiguousarray(np.swapaxes(array, 0, 2))  # -> x, y, z (, c)
    img = nib.Nifti1Image(data, nifti_affine(spacing, origin))
    img.header.set_xyzt_units("mm")
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    nib.save(img, str(path))


def load_volume(path: Path) -> tuple[np.ndarray, tuple[float, float, float], tuple[float, float, float]]:
    """Read a cohort NIfTI file back as a ``[z, y, x]`` array with spacing and origin."""
    img = _open_lps(path)
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as err:
        raise CohortError(f"{path}: cannot read voxel data ({err})") from None
    return np.swapaxes(data, 0, 2), *_grid(img)


def save_displacement(
    path: Path,
    displacement: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> None:
    """Write a ``[z, y, x, 3]`` field of ``(dz, dy, dx)`` (LPS mm) as a NIfTI displacement field.

    On disk (format version 2): float32, 5D ``(x, y, z, 1, 3)``, intent code 1006
    (``NIFTI_INTENT_DISPVECT``), components ``(R, A, S)`` in mm in the NIfTI world frame
    of the affine, i.e. ``(-dx, -dy, dz)``. This is what ITK (5.3 and later) itself writes:
    ITK, SimpleITK and 3D Slicer read the file as a displacement field with LPS components
    ``(dx, dy, dz)``, ready for ``itk.DisplacementFieldTransform``.
    """
    ras = np.stack([-displacement[..., 2], -displacement[..., 1], displacement[..., 0]], axis=-1)
    data = np.ascontiguousarray(np.swapaxes(ras, 0, 2)[:, :, :, None, :], dtype=np.float32)
    img = nib.Nifti1Image(data, nifti_affine(spacing, origin))
    img.header.set_intent(NIFTI_INTENT_DISPVECT, name="displacement")
    img.header.set_xyzt_units("mm")
    img.header.set_qform(img.affine, code=1)
    img.header.set_sform(img.affine, code=1)
    nib.save(img, str(path))


def load_displacement(path: Path) -> np.ndarray:
    """Read a displacement field as ``[z, y, x, 3]`` float32 ``(dz, dy, dx)`` in LPS mm.

    Reads both the version-2 displacement vector image and the version-1 plain 4D array.
    """
    img = _open_lps(path)
    intent = int(img.header["intent_code"])
    shape = img.shape
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:
        raise CohortError(f"{path}: cannot read voxel data ({err})") from None
    if intent == NIFTI_INTENT_DISPVECT and len(shape) == 5 and shape[3:] == (1, 3):
        ras = np.swapaxes(data[:, :, :, 0, :], 0, 2)
        return np.stack([ras[..., 2], -ras[..., 1], -ras[..., 0]], axis=-1)
    if intent == 0 and len(shape) == 4 and shape[3] == 3:  # format version 1
        return np.swapaxes(data, 0, 2)
    raise CohortError(
        f"{path}: not a displacement field (shape {shape}, intent code {intent}; expected "
        f"(x, y, z, 1, 3) with intent {NIFTI_INTENT_DISPVECT})"
    )


def _open_lps(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
    except FileNotFoundError:
        raise CohortError(f"{path}: file not found") from None
    except Exception as err:  # nibabel raises several types for damaged files
        raise CohortError(f"{path}: cannot read NIfTI ({err})") from None
    codes = nib.aff2axcodes(img.affine)
    if codes != ("L", "P", "S"):
        raise CohortError(f"{path}: orientation {''.join(codes)}, cohort files must be LPS")
    return img


def _grid(img: nib.Nifti1Image) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Spacing and origin in ``(z, y, x)`` order of an LPS cohort file."""
    zooms = img.header.get_zooms()[:3]
    affine = img.affine
    origin = (float(affine[2, 3]), float(-affine[1, 3]), float(-affine[0, 3]))
    return (float(zooms[2]), float(zooms[1]), float(zooms[0])), origin


# ----------------------------------------------------------------------------- reading


class Cohort:
    """A complete cohort folder (unregistered data or one registered variant)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest_path = self.root / MANIFEST
        if not manifest_path.exists():
            if (self.root / PARTIAL_MARKER).exists():
                raise CohortError(
                    f"{self.root}: cohort is incomplete (no {MANIFEST}); rerun the command that "
                    "wrote it to resume"
                )
            raise CohortError(f"{manifest_path}: not found; {self.root} is not a cohort folder")
        self.manifest: dict[str, Any] = read_json(manifest_path)
        if self.manifest.get("format") != FORMAT_NAME:
            raise CohortError(f"{manifest_path}: not a {FORMAT_NAME} manifest")
        version = self.manifest.get("version", 0)
        if isinstance(version, int) and version > FORMAT_VERSION:
            raise CohortError(f"{manifest_path}: format version {version} is newer than this phasebench")
        if version not in READABLE_VERSIONS:
            raise CohortError(f"{manifest_path}: unknown format version {version!r}")
        try:
            check_name(str(self.manifest.get("name", "")), "cohort name")
            for rec in self.manifest["patients"]:
                check_name(rec["id"], "patient id")
        except ValueError as err:
            raise CohortError(f"{manifest_path}: {err}") from None
        self._records = {rec["id"]: rec for rec in self.manifest["patients"]}

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def variant(self) -> str:
        return str(self.manifest.get("variant", UNREGISTERED))

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", "unknown"))

    @property
    def patient_ids(self) -> list[str]:
        return list(self._records)

    def record(self, patient_id: str) -> dict[str, Any]:
        """The manifest entry of one patient (split, spacing, shape, lesion phase, ...)."""
        try:
            return self._records[patient_id]
        except KeyError:
            raise CohortError(f"{self.root}: no patient {patient_id!r}") from None

    def split_ids(self, split: str) -> list[str]:
        return [pid for pid, rec in self._records.items() if rec["split"] == split]

    def patient_dir(self, patient_id: str) -> Path:
        self.record(patient_id)  # only ids of the manifest, which are checked names
        return self.root / "patients" / patient_id

    def load(self, patient_id: str, *, liver: bool = True, displacement: bool = False) -> Patient:
        """Read one patient as arrays (float32 HU, uint8 masks) plus metadata."""
        rec = self.record(patient_id)
        folder = self.patient_dir(patient_id)
        phases = {}
        for phase in PHASES:
            arr, spacing, origin = load_volume(folder / f"{phase}.nii.gz")
            phases[phase] = arr.astype(np.float32)
        lesion = load_volume(folder / "lesion.nii.gz")[0].astype(np.uint8)
        livers = None
        if liver and rec.get("liver_phases"):
            livers = {
                p: load_volume(folder / f"liver_{p}.nii.gz")[0].astype(np.uint8)
                for p in rec["liver_phases"]
            }
        disp = None
        if displacement and rec.get("displacement_phases"):
            disp = {
                p: load_displacement(folder / f"displacement_{p}.nii.gz")
                for p in rec["displacement_phases"]
            }
        return Patient(
            id=patient_id,
            phases=phases,
            lesion=lesion,
            lesion_phase=rec["lesion_phase"],
            spacing=spacing,
            origin=origin,
            split=rec["split"],
            liver=livers,
            displacement=disp,
            meta=read_json(folder / PATIENT_META).get("meta", {}),
        )

    def __iter__(self) -> Iterator[Patient]:
        for pid in self.patient_ids:
            yield self.load(pid)

    def __len__(self) -> int:
        return len(self._records)

    def __repr__(self) -> str:
        return f"Cohort({str(self.root)!r}, variant={self.variant!r}, patients={len(self)})"


def variant_dir(cohort_root: str | Path, variant: str) -> Path:
    """Folder of a registered variant of a cohort (the cohort itself for ``unregistered``)."""
    root = Path(cohort_root)
    return root if variant == UNREGISTERED else root / "variants" / variant


def open_variant(cohort_root: str | Path, variant: str) -> Cohort:
    return Cohort(variant_dir(cohort_root, variant))


# ----------------------------------------------------------------------------- writing


class CohortWriter:
    """Writes a cohort patient by patient; resumable; the manifest comes last.

    Each patient folder is written under a temporary name and renamed when complete, so a
    killed writer leaves only complete patients. Reopening a folder with the same ``params``
    resumes (``done()`` lists the finished patients); different params are refused.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        name: str,
        kind: str,
        params: dict[str, Any],
        variant: str = UNREGISTERED,
        provenance: dict[str, Any] | None = None,
        overwrite: bool = False,
    ):
        self.root = Path(root)
        try:
            check_name(name, "cohort name")
        except ValueError as err:
            raise CohortError(f"{self.root}: {err}") from None
        self.header = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": name,
            "kind": kind,
            "variant": variant,
            "phases": list(PHASES),
            "fixed_phase": FIXED_PHASE,
            "params": params,
            "provenance": provenance or {},
        }
        self._prepare(overwrite)

    def _prepare(self, overwrite: bool) -> None:
        marker = self.root / PARTIAL_MARKER
        if overwrite and ((self.root / MANIFEST).exists() or marker.exists()):
            shutil.rmtree(self.root)  # only a cohort folder is replaced, never other data
        if (self.root / MANIFEST).exists():
            old = read_json(self.root / MANIFEST)
            if old.get("params") != self.header["params"]:
                raise CohortError(
                    f"{self.root}: a complete cohort with other parameters exists; choose another "
                    "folder or pass --overwrite"
                )
        elif marker.exists():
            old = read_json(marker)
            if old.get("params") != self.header["params"]:
                raise CohortError(
                    f"{self.root}: an incomplete cohort with other parameters exists; choose "
                    "another folder or pass --overwrite"
                )
        elif self.root.exists() and any(p.name != "variants" for p in self.root.iterdir()):
            raise CohortError(
                f"{self.root}: folder exists, is not empty and is not a cohort (--overwrite "
                "replaces only a cohort folder); choose another folder"
            )
        try:
            (self.root / "patients").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CohortError(f"{self.root}: cannot create output folder ({err.strerror})") from None
        if not (self.root / MANIFEST).exists():
            write_json(marker, self.header)

    def done(self) -> set[str]:
        """Ids of patients already written completely."""
        folder = self.root / "patients"
        return {p.name for p in folder.iterdir() if (p / PATIENT_META).exists() and not p.name.startswith(".")}

    def write_patient(self, patient: Patient) -> None:
        try:
            check_name(patient.id, "patient id")
        except ValueError as err:
            raise CohortError(f"{self.root}: {err}") from None
        patient.validate()
        target = self.root / "patients" / patient.id
        with atomic_path(target) as tmp:
            tmp.mkdir()
            args = (patient.spacing, patient.origin)
            for phase in PHASES:
                hu = np.clip(np.rint(patient.phases[phase]), -32768, 32767).astype(np.int16)
                save_volume(tmp / f"{phase}.nii.gz", hu, *args)
            save_volume(tmp / "lesion.nii.gz", (patient.lesion > 0).astype(np.uint8), *args)
            for phase, mask in (patient.liver or {}).items():
                save_volume(tmp / f"liver_{phase}.nii.gz", (mask > 0).astype(np.uint8), *args)
            for phase, disp in (patient.displacement or {}).items():
                save_displacement(tmp / f"displacement_{phase}.nii.gz", disp, *args)
            write_json(tmp / PATIENT_META, {"record": _record(patient), "meta": patient.meta})

    def finish(self, order: list[str] | None = None) -> Cohort:
        """Write the manifest over every complete patient folder and return the cohort."""
        ids = sorted(self.done()) if order is None else order
        records = []
        for pid in ids:
            meta_path = self.root / "patients" / pid / PATIENT_META
            if not meta_path.exists():
                raise CohortError(f"{meta_path}: patient {pid} was never written")
            records.append(read_json(meta_path)["record"])
        manifest = {**self.header, "patients": records}
        write_json(self.root / MANIFEST, manifest)
        (self.root / PARTIAL_MARKER).unlink(missing_ok=True)
        return Cohort(self.root)


def assign_splits(
    patient_ids: list[str], seed: int, proportions: tuple[int, int, int] = (216, 54, 10)
) -> dict[str, str]:
    """Deterministic patient-level train/val/test split in the paper's proportions (216/54/10).

    Every split gets at least one patient when there are three or more patients.
    """
    ids = sorted(patient_ids)
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    total = sum(proportions)
    n_val = round(len(ids) * proportions[1] / total)
    n_test = round(len(ids) * proportions[2] / total)
    if len(ids) >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    n_train = len(ids) - n_val - n_test
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return dict(zip(order, splits, strict=True))


def _record(patient: Patient) -> dict[str, Any]:
    return {
        "id": patient.id,
        "split": patient.split,
        "shape": list(patient.shape),
        "spacing": [float(s) for s in patient.spacing],
        "origin": [float(o) for o in patient.origin],
        "lesion_phase": patient.lesion_phase,
        "liver_phases": sorted(patient.liver or {}, key=PHASES.index),
        "displacement_phases": sorted(patient.displacement or {}, key=PHASES.index),
    }
