"""``data import`` (real CT into the cohort format) and ``data export`` (cohort to DICOM)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmark import FIXED_PHASE, PHASES

GROUP = "data"
ORDER = 20

IMPORT_EPILOG = """\
Patients are identified by DICOM PatientID, or by the first subfolder under SRC. Their
folder names are slugs of those ids: characters outside A-Z a-z 0-9 . _ - become '_', no
leading dot, at most 64 characters, plus '-' and 8 hex digits of a hash whenever this
changed the id (the original id is kept in the report and in patient.json).
Phases come from --phase-map, else from keywords in SeriesDescription (or NIfTI/NRRD file
names): pre/native/non-contrast/NC, arterial/art/AP, portal/venous/PV,
delayed/equilibrium/late; series without a keyword fill the missing phases in acquisition
order. Every patient needs exactly four phases, else it is skipped and reported.

Phase map CSV (header 'patient,source,phase'): source = SeriesInstanceUID, SeriesNumber,
SeriesDescription or a file/folder path (relative to SRC); phase = one of the four phases,
'lesion', 'lesion:PHASE' or 'liver:PHASE' (mask files).

Masks: NIfTI/NRRD label maps or DICOM SEG, matched to a patient by the SEG's referenced
series, or by a file/folder name equal to the patient id (or the only patient). The phase a
mask was drawn on: the SEG's referenced series, a phase name in the file name, else
--lesion-phase (lesions) / portal (livers). Everything is resampled onto the portal grid by
physical coordinates. The summary is printed and written to DIR/import_report.json.

Nothing is dropped silently: NaN/Inf voxels are an error naming the file and the count
(--fill-nonfinite HU replaces them and says so), an empty lesion mask skips its patient,
and every file that is neither usable DICOM nor NIfTI/NRRD is listed in the report.

example (HCC-TACE-Seg, segment 1 = liver, 2 = tumour):
  python -m benchmark data import HCC-TACE-Seg/ --out cohorts/tace \\
      --lesion-masks HCC-TACE-Seg/ --lesion-label 2 --liver-masks HCC-TACE-Seg/ --liver-label 1
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    imp = subparsers.add_parser(
        "import",
        help="import four-phase CT (DICOM, NIfTI, NRRD) with masks into a cohort",
        description="Import real multiphase CT into the phasebench cohort format.",
        epilog=IMPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("src", type=Path, metavar="SRC", help="folder (any nesting) or file to import")
    imp.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="cohort folder to write"
    )
    imp.add_argument(
        "--phase-map", type=Path, metavar="CSV", help="patient,source,phase mapping file"
    )
    imp.add_argument(
        "--lesion-masks",
        type=Path,
        nargs="+",
        default=[],
        metavar="PATH",
        help="lesion mask files or folders (NIfTI/NRRD label maps, DICOM SEG)",
    )
    imp.add_argument(
        "--liver-masks",
        type=Path,
        nargs="+",
        default=[],
        metavar="PATH",
        help="liver mask files or folders, one per phase where available",
    )
    imp.add_argument(
        "--lesion-label",
        type=int,
        metavar="N",
        help="lesion label value / SEG segment number (default: every non-zero voxel)",
    )
    imp.add_argument(
        "--liver-label",
        type=int,
        metavar="N",
        help="liver label value / SEG segment number (e.g. 5 for TotalSegmentator)",
    )
    imp.add_argument(
        "--lesion-phase",
        choices=PHASES,
        default=FIXED_PHASE,
        help="phase the lesion masks were drawn on when nothing else says (default: %(default)s)",
    )
    imp.add_argument(
        "--fill-nonfinite",
        type=float,
        metavar="HU",
        help="replace NaN/Inf voxels of the images by HU (default: such voxels are an error)",
    )
    imp.add_argument("--name", help="cohort name (default: the --out folder name)")
    imp.add_argument(
        "--seed", type=int, default=0, help="seed of the train/val/test split (default: 0)"
    )
    imp.add_argument("--overwrite", action="store_true", help="replace an existing cohort in DIR")
    imp.set_defaults(func=run_import)

    exp = subparsers.add_parser(
        "export",
        help="export a cohort as DICOM series (one per phase) plus DICOM SEG masks",
        description=(
            "Write every patient as four DICOM CT series (one per phase, RescaleIntercept -1024) "
            "plus the lesion and liver masks as DICOM SEG objects and a phase_map.csv that "
            "'data import' reads back. Useful for viewing a cohort in PACS tools."
        ),
    )
    exp.add_argument(
        "cohort", type=Path, metavar="COHORT", help="cohort folder (or a variant folder)"
    )
    exp.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write")
    exp.add_argument(
        "--format", choices=["dicom"], default="dicom", help="output format (default: %(default)s)"
    )
    exp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in DIR (never a folder holding anything else)",
    )
    exp.set_defaults(func=run_export)


def run_import(args: argparse.Namespace) -> int:
    from benchmark.importer import REPORT, ImportOptions, import_cohort

    options = ImportOptions(
        phase_map=args.phase_map,
        lesion_masks=args.lesion_masks,
        liver_masks=args.liver_masks,
        lesion_label=args.lesion_label,
        liver_label=args.liver_label,
        lesion_phase=args.lesion_phase,
        seed=args.seed,
        name=args.name,
        overwrite=args.overwrite,
        fill_nonfinite=args.fill_nonfinite,
    )
    report = import_cohort(args.src, args.out, options)
    print(format_report(report))
    print(f"report written to {args.out / REPORT}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from benchmark.importer import export_cohort

    written = export_cohort(args.cohort, args.out, overwrite=args.overwrite)
    print(f"exported {len(written)} patients to {args.out}")
    return 0


def format_report(report: dict[str, Any]) -> str:
    """Human-readable import summary: one block per patient, then the skipped items."""
    lines = [f"imported {len(report['patients'])} patients from {report['source']}"]
    for pid, info in report["patients"].items():
        source = info.get("source_id", pid)
        named = pid if source == pid else f"{pid} (source id {source!r})"
        if "phases" not in info:
            lines.append(f"  {named}: {info.get('status', '')}")
            continue
        spacing = "x".join(f"{s:.2f}" for s in info["spacing"])
        lines.append(f"  {named}: shape {tuple(info['shape'])}, spacing {spacing} mm (z,y,x)")
        for phase, p in info["phases"].items():
            lo, hi = p["hu_range"]
            lines.append(
                f"    {phase:<11} {p['description'] or p['source']:<30} HU [{lo:.0f}, {hi:.0f}]"
                f"  field of view {100 * p['fov_coverage']:.0f}%"
            )
        lines.append(f"    lesion on {info['lesion_phase']}: {info['lesion']['volume_ml']} ml")
        for phase, liver in info["liver"].items():
            lines.append(f"    liver {phase}: {liver['volume_ml']} ml")
        lines += [f"    warning: {w}" for w in info["warnings"]]
    if report["skipped"]:
        lines.append(f"skipped {len(report['skipped'])} items:")
        lines += [f"  {s['item']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines)
