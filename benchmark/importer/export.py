"""Export a cohort as DICOM: one CT series per phase plus NIfTI label maps of the masks.

Layout of the export folder (``data import EXPORT --phase-map EXPORT/phase_map.csv`` reads it
back)::

    EXPORT/<patient>/<phase>/0001.dcm ...     CT Image Storage, one file per slice
    EXPORT/<patient>/lesion_<phase>.nii.gz    lesion label map (phase it was drawn on)
    EXPORT/<patient>/liver_<phase>.nii.gz     liver masks, where the cohort has them
    EXPORT/phase_map.csv                      patient,source,phase (written last)

Pixels are stored unsigned with RescaleIntercept -1024 (HU below -1024 are clipped to -1024
and counted in the returned summary). UIDs are derived deterministically from the cohort
name, patient and phase, so exporting twice gives identical files.
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

from benchmark import PHASES
from benchmark.atomic import atomic_path, write_text
from benchmark.cohort import Cohort, Patient, save_volume

INTERCEPT = -1024
PHASE_MAP = "phase_map.csv"


def export_cohort(
    cohort_root: str | Path, out: str | Path, *, overwrite: bool = False
) -> dict[str, int]:
    """Write every patient of the cohort as DICOM series; return ``{patient: clipped voxels}``."""
    cohort = Cohort(cohort_root)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ValueError(
                f"{out}: folder exists and is not empty; choose another or pass --overwrite"
            )
        shutil.rmtree(out)
    rows = ["patient,source,phase"]
    clipped = {}
    for pid in cohort.patient_ids:
        patient = cohort.load(pid)
        with atomic_path(out / pid) as tmp:
            tmp.mkdir()
            clipped[pid] = write_patient(patient, tmp, cohort.name)
        rows += [f"{pid},{pid}/{phase},{phase}" for phase in PHASES]
        rows.append(
            f"{pid},{pid}/lesion_{patient.lesion_phase}.nii.gz,lesion:{patient.lesion_phase}"
        )
        rows += [f"{pid},{pid}/liver_{phase}.nii.gz,liver:{phase}" for phase in patient.liver or {}]
    write_text(out / PHASE_MAP, "\n".join(rows) + "\n")
    return clipped


def write_patient(patient: Patient, folder: Path, cohort_name: str) -> int:
    """Write one patient's series and masks into ``folder``; return the number of clipped voxels."""
    study = generate_uid(entropy_srcs=[cohort_name, patient.id, "study"])
    frame = generate_uid(entropy_srcs=[cohort_name, patient.id, "frame"])
    clipped = 0
    for number, phase in enumerate(PHASES, start=1):
        hu = np.rint(patient.phases[phase])
        clipped += int((hu < INTERCEPT).sum())
        stored = np.clip(hu - INTERCEPT, 0, 65535).astype(np.uint16)
        series = generate_uid(entropy_srcs=[cohort_name, patient.id, phase])
        (folder / phase).mkdir()
        for k in range(stored.shape[0]):
            ds = _slice(patient, stored[k], k, phase, number, study, series, frame, cohort_name)
            ds.save_as(folder / phase / f"{k + 1:04d}.dcm", enforce_file_format=True)
    args = (patient.spacing, patient.origin)
    save_volume(
        folder / f"lesion_{patient.lesion_phase}.nii.gz", patient.lesion.astype(np.uint8), *args
    )
    for phase, mask in (patient.liver or {}).items():
        save_volume(folder / f"liver_{phase}.nii.gz", mask.astype(np.uint8), *args)
    return clipped


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
    ds.PatientID = ds.PatientName = patient.id
    ds.StudyID = "1"
    ds.StudyDescription = f"phasebench {cohort_name}"
    ds.Modality = "CT"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SeriesDescription = f"phasebench {phase}"
    ds.SeriesNumber = number
    ds.AcquisitionNumber = number
    ds.InstanceNumber = k + 1
    # phases are acquired in PHASES order; a synthetic time keeps that order for importers
    ds.SeriesTime = ds.AcquisitionTime = f"1200{number:02d}"
    ds.ImagePositionPatient = [float(ox), float(oy), float(oz + k * sz)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(sy), float(sx)]
    ds.SliceThickness = float(sz)
    ds.SpacingBetweenSlices = float(sz)
    ds.SliceLocation = float(oz + k * sz)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = INTERCEPT, 1, "HU"
    ds.WindowCenter, ds.WindowWidth = 60, 400
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds
