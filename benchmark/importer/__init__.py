"""Bring real multiphase CT into the cohort format, and export cohorts to DICOM.

* :func:`import_cohort` (``python -m benchmark data import``): DICOM / NIfTI / NRRD sources,
  phase assignment, resampling onto the portal grid, masks, report.
* :func:`export_cohort` (``python -m benchmark data export --format dicom``).
"""

from benchmark.importer.build import REPORT, ImportOptions, import_cohort
from benchmark.importer.export import export_cohort

__all__ = ["REPORT", "ImportOptions", "export_cohort", "import_cohort"]
