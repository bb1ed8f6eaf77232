"""Export a cohort as DICOM: one CT series per phase plus the masks as DICOM SEG.

Layout of the export folder (``data import EXPORT --phase-map EXPORT/phase_map.csv`` reads it
back, and so does ``data import EXPORT --lesion-masks EXPORT --liver-masks EXPORT``)::

    EXPORT/<patient>/<phase>/0001.dcm ...     CT Image Storage, one file per slice
    EXPORT/<patient>/lesion_<phase>.dcm       Segmentation Storage (highdicom): the lesion,
                                              referencing the series of the phase it was drawn on
    EXPORT/<patient>/liver_<phase>.dcm        liver masks, where the cohort has them
    EXPORT/phase_map.csv                      patient,source,phase (written last)
    EXPORT/.partial-export                    only while an export runs or was interrupted

The files pass ``dciodvfy`` (dicom3tools) without errors: Type 2 attributes that the cohort
cannot know (birth date, sex, study date, accession number, ...) are present and empty, and
decimal strings are formatted to at most 16 characters.

Pixels are stored unsigned with RescaleIntercept -1024 (HU below -1024 are clipped to -1024
and counted in the returned summary). UIDs are derived deterministically from the cohort
name, patient and phase, so exporting twice gives identical CT files (the SEG objects differ
only in their content date and time, which highdicom sets to the time of writing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)
from pydicom.valuerep import DSfloat

from benchmark import PHASES, __version__
from benchmark.atomic import atomic_path, write_text
from benchmark.cohort import Cohort, Patient

INTERCEPT = -1024
PHASE_MAP = "phase_map.csv"
PARTIAL_MARKER = ".partial-export"
MANUFACTURER = "phasebench"
_TYPE2_EMPTY = (
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "AccessionNumber",
    "Laterality",
    "PatientPosition",
    "PositionReferenceIndicator",
    "KVP",
)


def export_cohort(
    cohort_root: str | Path, out: str | Path, *, overwrite: bool = False
) -> dict[str, int]:
    """Write every patient of the cohort as DICOM series; return ``{patient: clipped voxels}``.

    ``overwrite`` replaces an earlier export (a folder with ``phase_map.csv`` or the partial
    marker), never a folder holding anything else.
    """
    cohort = Cohort(cohort_root)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        is_export = (out / PHASE_MAP).exists() or (out / PARTIAL_MARKER).exists()
        if not (overwrite and is_export):
            what = "an earlier export; pass --overwrite" if is_export else "not an export"
            raise ValueError(
                f"{out}: folder exists, is not empty and is {what} (or choose another folder)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / PARTIAL_MARKER, f"phasebench export of {cohort.root}\n")
    rows = ["patient,source,phase"]
    clipped = {}
    for pid in cohort.patient_ids:
        patient = cohort.load(pid)
        with atomic_path(out / pid) as tmp:
            tmp.mkdir()
            clipped[pid] = write_patient(patient, tmp, cohort.name)
        rows += [f"{pid},{pid}/{phase},{phase}" for phase in PHASES]
        rows.append(f"{pid},{pid}/lesion_{patient.lesion_phase}.dcm,lesion:{patient.lesion_phase}")
        rows += [f"{pid},{pid}/liver_{phase}.dcm,liver:{phase}" for phase in patient.liver or {}]
    write_text(out / PHASE_MAP, "\n".join(rows) + "\n")
    (out / PARTIAL_MARKER).unlink()
    return clipped


def write_patient(patient: Patient, folder: Path, cohort_name: str) -> int:
    """Write one patient's series and masks into ``folder``; return the number of clipped voxels."""
    study = generate_uid(entropy_srcs=[cohort_name, patient.id, "study"])
    frame = generate_uid(entropy_srcs=[cohort_name, patient.id, "frame"])
    clipped = 0
    series: dict[str, list[Dataset]] = {}
    for number, phase in enumerate(PHASES, start=1):
        hu = np.rint(patient.phases[phase])
        clipped += int((hu < INTERCEPT).sum())
        stored = np.clip(hu - INTERCEPT, 0, 65535).astype(np.uint16)
        uid = generate_uid(entropy_srcs=[cohort_name, patient.id, phase])
        (folder / phase).mkdir()
        series[phase] = []
        for k in range(stored.shape[0]):
            ds = _slice(patient, stored[k], k, phase, number, study, uid, frame, cohort_name)
            ds.save_as(folder / phase / f"{k + 1:04d}.dcm", enforce_file_format=True)
            series[phase].append(ds)
    masks = [("lesion", patient.lesion_phase, patient.lesion)]
    masks += [("liver", phase, mask) for phase, mask in (patient.liver or {}).items()]
    for number, (role, phase, mask) in enumerate(masks, start=len(PHASES) + 1):
        seg = segmentation(series[phase], mask > 0, role, number, cohort_name)
        seg.save_as(folder / f"{role}_{phase}.dcm", enforce_file_format=True)
    return clipped


def segmentation(
    source: list[Dataset], mask: np.ndarray, role: str, number: int, cohort_name: str
) -> Dataset:
    """A binary DICOM SEG of ``mask`` (``[slice, row, column]`` like ``source``) with one segment.

    ``role`` is ``lesion`` (SNOMED CT: morphologically abnormal structure / neoplasm) or
    ``liver`` (tissue / liver). Every frame is stored, empty ones included, so the SEG always
    covers the whole series.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    category, kind = {
        "lesion": (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
        "liver": (codes.SCT.Tissue, codes.SCT.Liver),
    }[role]
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=role.capitalize(),
        segmented_property_category=category,
        segmented_property_type=kind,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    first = source[0]
    uid = generate_uid(entropy_srcs=[str(first.SeriesInstanceUID), role, "seg"])
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=np.ascontiguousarray(mask, dtype=bool),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=uid,
        series_number=number,
        sop_instance_uid=generate_uid(entropy_srcs=[uid, "1"]),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MANUFACTURER,
        software_versions=__version__,
        device_serial_number="0",
        series_description=f"phasebench {role} ({cohort_name})"[:64],
        omit_empty_frames=False,
    )


def _ds(value: float) -> DSfloat:
    """A decimal string of at most 16 characters (DICOM DS), rounded to 1 nm."""
    return DSfloat(round(float(value), 6), auto_format=True)


def _slice(
    patient: Patient,
    pixels: np.ndarray,
    k: int,
    phase: str,
    number: int,
    study: str,
    series: str,
    frame: str,
    cohort_name: str,
) -> Dataset:
    sz, sy, sx = patient.spacing
    oz, oy, ox = patient.origin
    sop = generate_uid(entropy_srcs=[series, str(k)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
    ds.PatientID = patient.id
    ds.PatientName = f"{patient.id}^"  # family name only
    for keyword in _TYPE2_EMPTY:  # required, unknown for a cohort: present and empty
        setattr(ds, keyword, "")
    ds.Manufacturer = MANUFACTURER
    ds.StudyID = "1"
    ds.StudyDescription = f"phasebench {cohort_name}"[:64]
    ds.Modality = "CT"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesDescription = f"phasebench {phase}"
    ds.SeriesNumber = number
    ds.AcquisitionNumber = number
    ds.InstanceNumber = k + 1
    # phases are acquired in PHASES order; a synthetic time keeps that order for importers
    ds.SeriesTime = ds.AcquisitionTime = f"1200{number:02d}"
    ds.ImagePositionPatient = [_ds(ox), _ds(oy), _ds(oz + k * sz)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [_ds(sy), _ds(sx)]
    ds.SliceThickness = _ds(sz)
    ds.SpacingBetweenSlices = _ds(sz)
    ds.SliceLocation = _ds(oz + k * sz)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 60, 400
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds
