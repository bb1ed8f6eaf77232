"""``python -m benchmark register``: registered variants of a cohort and Table II."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

ORDER = 20

EPILOG = """\
By default (the paper's protocol) each of precontrast, arterial and delayed is registered
slice by slice onto portal with elastix's default parameter maps (non-rigid = affine then
B-spline), over the slices the detector reads (lesion slices and their neighbours); the other
slices are copied. --preset fast runs cheaper maps (about a third of the non-rigid time, liver
Dice within 0.005 on the phantom); --dims 3 registers each phase as one volume, which follows
breathing through the slice plane. Each is its own variant: nonrigid, nonrigid-fast,
nonrigid-3d, ... (docs/registration.md lists the maps and measured results).

Variants go to COHORT/variants/<variant>/ with a registration_log.csv and every elastix
transform (transforms/); non-rigid starts from the affine variant's transforms (same
dimensions and preset) when they exist (same result, faster). Table II, over every variant
registered so far, goes to COHORT/variants/table2.csv and table2.md. Rerun the same command to
resume.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    from benchmark.executors import add_executor_args
    from benchmark.vocabulary import DEFAULT_PRESET, DIMS, PRESETS, REGISTRATIONS
    from registration.backends import BACKENDS

    parser = subparsers.add_parser(
        "register",
        help="register a cohort rigidly, affinely and non-rigidly (elastix, 2D or 3D); print "
        "Table II",
        description="Register the moving phases of a cohort onto portal and measure alignment "
        "(the paper's Table II).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cohort", required=True, type=Path, metavar="DIR",
                        help="unregistered cohort folder")
    parser.add_argument("--variant", required=True, choices=(*REGISTRATIONS, "all"),
                        help="registration to run ('all' = rigid, affine and nonrigid)")
    parser.add_argument("--dims", type=int, choices=DIMS, default=2,
                        help="2: per axial slice, as the paper (default); 3: each phase as one "
                        "volume (variant names end in -3d)")
    parser.add_argument("--preset", choices=PRESETS, default=DEFAULT_PRESET,
                        help="elastix maps: default (elastix's, as the paper) or fast (2D only; "
                        "variant names end in -fast)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="parallel processes, one patient each; ITK threads per process "
                        "= cores // N (default 1)")
    parser.add_argument("--backend", choices=BACKENDS, default="itk-elastix",
                        help="elastix binding (default itk-elastix; simpleelastix needs "
                        "pip install phasebench[simpleelastix])")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_executor_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from benchmark.analysis.published import published_liver_dice
    from benchmark.executors import executor_from_args
    from registration.alignment import alignment_table, to_markdown
    from registration.stage import read_log, register_variant, worker_pool
    from registration.variants import Variant, family

    chosen = (family(args.dims, args.preset) if args.variant == "all"
              else (Variant(args.variant, args.dims, args.preset),))
    variants = [v.name for v in chosen]
    executor = executor_from_args(args)  # ray: one task per patient; local: --workers processes
    walls = {}
    with worker_pool(args.workers, args.backend) as pool:  # ITK loads once per worker
        for variant in variants:
            start = time.perf_counter()
            register_variant(args.cohort, variant, workers=args.workers, backend=args.backend,
                             progress=not args.no_progress,
                             executor=executor if executor.remote else None, pool=pool)
            walls[variant] = time.perf_counter() - start
    # every variant registered so far
    table = alignment_table(args.cohort, published=published_liver_dice())
    print("Table II (alignment between phases; written to "
          f"{args.cohort / 'variants' / 'table2.csv'})")
    print(to_markdown(table))
    print("Timing (seconds per slice or per patient volume = three moving phases; wall clock "
          "of this run):")
    for variant in variants:
        print("  " + timing_summary(read_log(args.cohort, variant), variant, walls[variant]))
    return 0


def timing_summary(log: pd.DataFrame, variant: str, wall: float) -> str:
    """One line: registered slices (2D) or patients (3D), mean seconds for each (three moving
    phases), failures, wall time."""
    done = log[log["status"] != "copied"]
    volumes = done["slice"].isna().all() and len(done) > 0  # 3D: one row per phase volume
    per_unit = done.groupby("patient" if volumes else ["patient", "slice"])["seconds"].sum()
    unit = "patient" if volumes else "slice"
    failed = int((log["status"] == "failed").sum())
    mean = per_unit.mean() if len(per_unit) else float("nan")
    return (f"{variant:14s} {len(per_unit):6d} {unit}s  {mean:6.2f} s/{unit}  "
            f"{failed} failed  wall {wall:7.1f} s (this run)")
