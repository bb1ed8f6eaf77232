"""``data info`` (cohort summary) and ``data show`` (the paper's Fig. 1 view of one slice)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

GROUP = "data"
ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser(
        "info",
        help="summarise a cohort (patients, slices, lesions, liver Dice between phases)",
        description="Print patients per split, slices, lesion sizes and reference phases, and the "
        "per-phase liver Dice to portal (per slice, mean over non-zero slices) where liver masks exist.",
    )
    info.add_argument("cohort", type=Path, metavar="COHORT", help="cohort folder")
    info.add_argument(
        "--variant",
        default="unregistered",
        help="registered variant to summarise (default: %(default)s)",
    )
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    info.set_defaults(func=run_info)

    show = subparsers.add_parser(
        "show",
        help="draw one slice's four phases with the lesion contour and box (paper's Fig. 1)",
        description="Draw the four phases of one slice side by side (window -150..250 HU) with the "
        "smoothed lesion-mask contour (red) and its boxes (yellow) to a PNG.",
    )
    show.add_argument("cohort", type=Path, metavar="COHORT", help="cohort folder")
    show.add_argument("--patient", required=True, metavar="ID", help="patient id (see 'data info')")
    show.add_argument(
        "--slice",
        type=int,
        metavar="Z",
        help="axial slice index (default: the slice with the largest lesion area)",
    )
    show.add_argument("--out", type=Path, required=True, metavar="PNG", help="image file to write")
    show.add_argument(
        "--variant",
        default="unregistered",
        help="registered variant to draw (default: %(default)s)",
    )
    show.set_defaults(func=run_show)


def run_info(args: argparse.Namespace) -> int:
    from benchmark.cohort import open_variant
    from benchmark.cohort_info import format_summary, summarize

    summary = summarize(open_variant(args.cohort, args.variant))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from benchmark.cohort import open_variant
    from benchmark.cohort_info import show

    path = show(open_variant(args.cohort, args.variant), args.patient, args.out, args.slice)
    print(f"wrote {path}")
    return 0
