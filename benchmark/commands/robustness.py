"""``python -m benchmark robustness``: AP against known misalignment levels (the ladder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmark.commands import load_model_modules
from benchmark.commands.train import _common, _config
from benchmark.executors import add_executor_args, executor_from_args

ORDER = 35

DESCRIPTION = """\
Train and test the chosen models at several known misalignment levels and report how AP falls
as misalignment grows, against the true misalignment measured over the liver.

Without --cohort, the profile's phantom is drawn once per level from the same seed: anatomy,
lesions, the portal phase and every label are identical, only the other phases move (LEVEL =
the phantom's motion_mm, with the bulk table shift scaled alike, 0.75 x LEVEL; level 0 has no
motion at all, the oracle registration). With --cohort, the cohort's non-rigid variant
(registered first when missing) is deformed once per level by a smooth random field whose mean
length over the liver is LEVEL mm, applied to the non-portal phases (portal and the lesion mask
fixed, liver masks carried) and stored as the true displacement.

Printed and written under RUNS/robustness/<ladder>/: AP per model and level with 95% paired
patient-bootstrap CIs (levels.csv), mPC (mean AP over the non-zero levels) and rPC (mPC / AP at
level 0) per model with CIs (summary.csv), the measured misalignment per patient
(misalignment.csv), the facts (summary.json) and the figure (ladder.png, also in `report`).
Units are ordinary run folders: finished ones are skipped, killed ones resume, and the
executors of `run` train them. Layout and method: docs/robustness.md.
"""

EPILOG = """\
examples:
  python -m benchmark robustness --motion-mm 0,2,4,8,12 --models gssd,gssd_pp,gssd_portal
  python -m benchmark robustness --motion-mm 0,4,8 --models gssd --seeds 1 2 3 --metric IoBB50
  python -m benchmark robustness --cohort cohorts/mine --motion-mm 0,3,6 --models gssd,gssd_pp
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "robustness",
        help="the misalignment ladder: AP, mPC and rPC against known misalignment levels",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--motion-mm",
        required=True,
        metavar="L1,L2,...",
        help="misalignment levels in mm, e.g. 0,2,4,8,12 (include 0 for AP at level 0 and rPC)",
    )
    parser.add_argument(
        "--models",
        default="gssd,gssd_pp,gssd_portal",
        metavar="all|a,b",
        help="all (Table I models), ablations (Table III) or a comma list of names or "
        "patterns (default gssd,gssd_pp,gssd_portal)",
    )
    parser.add_argument(
        "--cohort",
        type=Path,
        metavar="DIR",
        help="an imported cohort whose non-rigid variant is deformed (default: the phantom)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", metavar="S", help="default: profile seeds")
    parser.add_argument(
        "--runs",
        type=Path,
        default=Path("runs"),
        metavar="RUNS",
        help="runs folder (default runs; the ladder goes to RUNS/robustness/)",
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("work"),
        metavar="DIR",
        help="where level cohorts go (default work; WORK/robustness/)",
    )
    parser.add_argument(
        "--split",
        default="test",
        choices=("val", "test"),
        help="split the ladder is measured on (default test)",
    )
    parser.add_argument(
        "--metric",
        default="IoU50",
        metavar="M",
        help="AP metric: IoU30/50/70 or IoBB30/50/70 (default IoU50)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        metavar="N",
        help="patient-bootstrap replicates (default: the profile's eval.bootstrap)",
    )
    parser.add_argument(
        "--deform-seed",
        type=int,
        default=0,
        metavar="S",
        help="seed of the deformations applied with --cohort (default 0)",
    )
    add_executor_args(parser)
    _common(parser)
    parser.set_defaults(func=cmd_robustness)


def cmd_robustness(args: argparse.Namespace) -> int:
    from benchmark import runner
    from benchmark.evaluation import parse_metric
    from benchmark.robustness.ladder import format_result, run_ladder
    from benchmark.robustness.levels import parse_levels

    load_model_modules(args)
    levels = parse_levels(args.motion_mm)
    parse_metric(args.metric)  # a typo fails before any work
    base = _config(args)
    runner.set_threads(base)
    names = runner.parse_models(args.models)
    for name in names:  # a bad override fails before any cohort is made
        runner.check_model(base, name)
    seeds = args.seeds or base["seeds"]
    n_boot = base["eval"]["bootstrap"] if args.bootstrap is None else args.bootstrap
    if n_boot < 1:
        raise ValueError(f"--bootstrap {n_boot}: the ladder's CIs need at least 1 replicate")
    result, out = run_ladder(
        base,
        levels,
        names,
        seeds,
        cohort=args.cohort,
        runs=args.runs,
        work=args.work,
        executor=executor_from_args(args),
        deform_seed=args.deform_seed,
        split=args.split,
        metric=args.metric,
        n_boot=n_boot,
    )
    print()
    print(format_result(result))
    print(f"\ntables, facts and figure: {out} (layout: docs/robustness.md)")
    return 0
