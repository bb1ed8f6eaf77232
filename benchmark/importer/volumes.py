"""Readers for NIfTI and NRRD volumes and for masks (label maps or DICOM SEG).

All readers return a :class:`~benchmark.importer.resample.Volume` whose affine maps array
indices to LPS millimetres; NIfTI (RAS) and NRRD (any ``space``) headers are converted.
Header trust: a file's affine is used as written. What cannot be known from one file (such
as a cropped NIfTI that kept the original origin) is caught when a mask is placed on its
image: labelled voxels outside the image are counted and a mask entirely outside is an error
(see :func:`benchmark.importer.build.place_mask`).

Non-finite voxels (NaN, +-Inf) are never turned into numbers silently: :func:`check_finite`
refuses them naming the file and the count, or replaces them with a value the user chose.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from benchmark.importer.dicom import is_dicom
from benchmark.importer.resample import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
# sign flips taking each NRRD "space" to LPS
_NRRD_SPACES = {
    "left-posterior-superior": (1, 1, 1),
    "right-anterior-superior": (-1, -1, 1),
    "left-anterior-superior": (1, -1, 1),
    "right-posterior-superior": (-1, 1, 1),
}


def is_volume_file(path: Path) -> bool:
    """True for NIfTI and NRRD file names."""
    name = path.name.lower()
    return name.endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES)


def stem(path: Path) -> str:
    """File name without the volume suffix (``a.nii.gz`` -> ``a``)."""
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_volume(path: Path) -> Volume:
    """Read a 3D NIfTI or NRRD file (voxel values as stored, scaled by the header)."""
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return _read_nifti(path)
    if name.endswith(NRRD_SUFFIXES):
        return _read_nrrd(path)
    raise ValueError(f"{path}: not a NIfTI (.nii, .nii.gz) or NRRD (.nrrd, .nhdr) file")


def check_finite(volume: Volume, fill: float | None = None) -> str:
    """Refuse NaN/Inf voxels naming the file(s) and the count; with ``fill``, replace them.

    Returns a warning describing the replacement ("" when every voxel was finite). For a
    DICOM series (``meta["slice_files"]``) the slices holding the voxels are named.
    """
    bad = ~np.isfinite(volume.array)
    count = int(bad.sum())
    if not count:
        return ""
    files = volume.meta.get("slice_files")
    if files and len(files) == bad.shape[0]:
        hit = [f for f, n in zip(files, bad.reshape(len(files), -1).sum(axis=1), strict=True) if n]
        where = hit[0] + (f" (and {len(hit) - 1} more slices)" if len(hit) > 1 else "")
    else:
        where = volume.source
    if fill is None:
        raise ValueError(
            f"{where}: {count} of {bad.size} voxels are NaN or infinite; fix the file or pass "
            "--fill-nonfinite HU to replace them"
        )
    volume.array = np.where(bad, np.float32(fill), volume.array.astype(np.float32))
    return f"{where}: {count} NaN/infinite voxels replaced by {fill:g} HU (--fill-nonfinite)"


def read_mask(path: Path, label: int | None = None) -> Volume:
    """A binary uint8 mask from a label map (NIfTI/NRRD) or a DICOM SEG.

    ``label`` picks one value of a multi-label map (one segment number of a SEG); ``None``
    keeps every voxel above 0.5 (every non-zero label, every segment).
    """
    volume = _read_seg(path, label) if is_dicom(path) else read_volume(path)
    data = volume.array
    bad = int(np.count_nonzero(~np.isfinite(data))) if data.dtype.kind == "f" else 0
    if bad:
        raise ValueError(f"{path}: {bad} of {data.size} voxels are NaN or infinite, not labels")
    if is_dicom(path):
        mask = data > 0
    elif label is None:
        mask = data > 0.5
    else:
        values = np.rint(data)
        if not np.any(values == label):
            found = sorted(int(v) for v in np.unique(values)[:20])
            raise ValueError(f"{path}: no voxel has label {label} (labels present: {found})")
        mask = values == label
    volume.array = mask.astype(np.uint8)
    volume.meta["label"] = label
    return volume


def _read_nifti(path: Path) -> Volume:
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as err:  # nibabel raises several types for damaged files
        raise ValueError(f"{path}: cannot read NIfTI ({err})") from None
    data = _squeeze_3d(data, path)
    if int(img.header["qform_code"]) == 0 and int(img.header["sform_code"]) == 0:
        raise ValueError(f"{path}: NIfTI header has no orientation (qform and sform codes are 0)")
    return Volume(
        array=data, affine=_RAS_TO_LPS @ img.affine, source=str(path), meta={"format": "nifti"}
    )


def _read_nrrd(path: Path) -> Volume:
    try:
        data, header = nrrd.read(str(path))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except Exception as err:  # pynrrd raises several types for damaged files
        raise ValueError(f"{path}: cannot read NRRD ({err})") from None
    data = _squeeze_3d(data, path)
    space = str(header.get("space", "")).lower()
    if space not in _NRRD_SPACES or "space directions" not in header:
        raise ValueError(
            f"{path}: NRRD header lacks a patient 'space' ({space or 'none'}) or 'space directions'; "
            "cannot place it in physical coordinates"
        )
    directions = np.asarray(header["space directions"], dtype=float)
    directions = directions[~np.isnan(directions).any(axis=1)]
    flip = np.array(_NRRD_SPACES[space], dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = (directions * flip).T
    affine[:3, 3] = np.asarray(header.get("space origin", np.zeros(3)), dtype=float) * flip
    return Volume(array=data, affine=affine, source=str(path), meta={"format": "nrrd"})


def _read_seg(path: Path, label: int | None) -> Volume:
    import highdicom as hd

    try:
        seg = hd.seg.segread(str(path))
    except Exception as err:  # highdicom/pydicom raise several types
        raise ValueError(f"{path}: cannot read DICOM SEG ({err})") from None
    numbers = list(seg.segment_numbers)
    if label is not None and label not in numbers:
        raise ValueError(f"{path}: no segment number {label} (segments: {numbers})")
    try:
        volume = seg.get_volume(
            segment_numbers=[label] if label is not None else numbers, combine_segments=True
        )
    except Exception as err:
        raise ValueError(f"{path}: DICOM SEG frames do not form a regular volume ({err})") from None
    refs = [str(r.SeriesInstanceUID) for r in seg.get("ReferencedSeriesSequence", [])]
    return Volume(
        array=np.asarray(volume.array),
        affine=np.asarray(volume.affine, dtype=float),
        source=str(path),
        meta={
            "format": "dicom-seg",
            "referenced_series": refs,
            "patient_id": str(seg.get("PatientID", "")),
        },
    )


def _squeeze_3d(data: np.ndarray, path: Path) -> np.ndarray:
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path}: expected a 3D volume, got shape {data.shape}")
    return data
