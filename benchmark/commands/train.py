"""``python -m benchmark train`` (one model) and ``python -m benchmark run`` (the matrix)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from math import nan
from pathlib import Path
from typing import Any

from benchmark.atomic import read_json
from benchmark.commands import add_deprecated_alias, add_model_module_arg, load_model_modules
from benchmark.config import DEFAULT_PROFILE, Override, profile_names, resolve
from benchmark.executors import RunLock, add_executor_args, executor_from_args
from benchmark.training_progress import ProgressDisplay

ORDER = 30

RUN_EPILOG = """\
examples:
  python -m benchmark run --variant nonrigid                  # the README's main job (quick)
  python -m benchmark run --variant affine --models gssd,gssd_pp --seeds 1 2 3
  python -m benchmark run --variant nonrigid --profile paper --set train.workers=16
  python -m benchmark run --variant rigid --profile my_profile.json --runs /scratch/runs
  python -m benchmark run --variant nonrigid --profile paper --executor ray --ray-address auto
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        metavar="P",
        help=f"settings: {', '.join(profile_names())} or a JSON file shaped like them "
        f"(default {DEFAULT_PROFILE}; copy benchmark/profiles/*.json to start your own)",
    )
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any profile field, e.g. --set train.iterations=200 "
        "--set detector.width=0.5 (repeatable; values are JSON)",
    )
    parser.add_argument(
        "--iterations", type=int, metavar="N", help="shortcut for --set train.iterations=N"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (shortcut for train.device)")
    add_model_module_arg(parser)


def _config(args: argparse.Namespace) -> dict:
    """The validated profile with ``--set`` and the shortcut options applied."""
    sets: list[str | Override] = list(args.assignments)
    if args.iterations is not None:
        sets.append(Override(f"train.iterations={args.iterations}",
                             f"--iterations {args.iterations}"))
    if args.device:
        sets.append(Override(f"train.device={json.dumps(args.device)}", f"--device {args.device}"))
    return resolve(args.profile, sets)


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train",
        help="train and evaluate one model on one cohort variant",
        description="Train one model on a cohort (or one of its registered variants), pick the "
        "best checkpoint on the validation split, evaluate val and test (AP per metric with "
        "its 95% patient-bootstrap interval), and write the run folder "
        "RUNS/<cohort>/<variant>/<model>/seed<S>/ (docs/run-folder.md). A finished run is "
        "skipped; a killed one resumes from its last checkpoint.",
    )
    train.add_argument("--cohort", required=True, metavar="DIR", help="cohort folder")
    train.add_argument(
        "--variant",
        default="unregistered",
        metavar="V",
        help="unregistered (default), rigid, affine or nonrigid (must exist; see `run`)",
    )
    train.add_argument("--model", required=True, metavar="NAME", help="a registered model name")
    train.add_argument("--seed", type=int, metavar="S", help="seed (default: the profile's first)")
    train.add_argument("--runs", default="runs", metavar="RUNS", help="runs folder (default runs)")
    add_deprecated_alias(train, "--out", "--runs", dest="runs")
    _common(train)
    train.set_defaults(func=cmd_train)

    run = subparsers.add_parser(
        "run",
        help="the benchmark matrix: train every model on a variant and unregistered, summarise",
        description=textwrap.fill(
            "Train and evaluate every model on a registered variant and on the unregistered "
            "cohort it is compared against, then print AP per metric and the paper's "
            "sensitivity (eq. 6). Without --cohort, the profile's synthetic phantom cohort is "
            "used (created under work/cohorts/ when missing); a missing registered variant is "
            "created. Finished runs are skipped, killed ones resume.",
            88,
        ),
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--variant", required=True, metavar="V", help="rigid, affine, nonrigid or unregistered (also a 3D or fast-preset variant, e.g. "
        "nonrigid-3d, nonrigid-fast: a separate experiment)"
    )
    run.add_argument("--cohort", metavar="DIR", help="cohort folder (default: synthetic phantom)")
    run.add_argument(
        "--models",
        default="all",
        metavar="all|a,b",
        help="all (Table I models, default), ablations (Table III) or a comma list of names "
        "or patterns (gssd*)",
    )
    run.add_argument("--seeds", type=int, nargs="+", metavar="S", help="default: profile seeds")
    run.add_argument("--runs", default="runs", metavar="RUNS", help="runs folder (default runs)")
    run.add_argument("--work", default="work", metavar="DIR", help="where default cohorts go")
    run.add_argument(
        "--split", default="test", choices=("val", "test"), help="split of the summary"
    )
    add_executor_args(run)
    _common(run)
    run.set_defaults(func=cmd_run)


def cmd_train(args: argparse.Namespace) -> int:
    from benchmark import run_folder, runner
    from benchmark.settings import check_seeds

    load_model_modules(args)
    base = _config(args)
    runner.set_threads(base)
    seed = args.seed if args.seed is not None else base["seeds"][0]
    check_seeds([seed], "--seed")
    config = runner.unit_config(
        base, Path(args.cohort), args.variant, args.model, seed, Path(args.runs)
    )
    with RunLock(run_folder.unit_dir(config)):  # one writer per run folder (docs/scaling.md)
        run_dir = runner.run_unit(config, ProgressDisplay(sys.stderr))
    print(format_unit_metrics(read_json(run_dir / run_folder.METRICS), config))
    print(f"run folder: {run_dir}")
    return 0


def format_unit_metrics(metrics: dict[str, Any], config: dict[str, Any]) -> str:
    """One run's AP (%) per metric and split with its 95% interval (patients resampled), under
    a line naming the model, cohort, variant, profile, seed and schedule of its ``config``."""
    import pandas as pd

    from benchmark import runner
    from benchmark.analysis.facts import format_estimate
    from benchmark.config import profile_label

    columns = {}
    for split in runner.SPLITS:
        m = metrics[split]
        ci = m.get("ci", {})
        header = f"{split} ({m['n_patients']} patients, {m['n_gt']} lesion boxes)"
        columns[header] = {
            key: format_estimate(100 * m[key], *(100 * b for b in ci.get(key, (nan, nan))))
            for key in runner.METRIC_KEYS
        }
    table = pd.DataFrame(columns).to_string()
    facts = (
        f"{config['model']} on {config['cohort_name']} ({config['variant']}), profile "
        f"{profile_label(config.get('profile'))}, seed {config['seed']}, input "
        f"{config['detector']['input_size']} px, {config['train']['iterations']} iterations"
    )
    bootstrap = config["eval"]["bootstrap"]
    if bootstrap <= 0:
        return f"{facts}\nAP (%), no intervals (eval.bootstrap is 0):\n{table}"
    return f"{facts}\nAP (%), 95% CI from {bootstrap} patient-bootstrap replicates:\n{table}"


def cmd_run(args: argparse.Namespace) -> int:
    from benchmark import runner
    from benchmark.analysis.facts import undefined_notes
    from benchmark.analysis.summary import summarise, summary_tables
    from benchmark.settings import check_seeds

    load_model_modules(args)
    base = _config(args)
    runner.set_threads(base)
    names = runner.parse_models(args.models)
    seeds = args.seeds or base["seeds"]
    check_seeds(seeds, "--seeds")
    ap, dirs = runner.run_matrix(
        base,
        args.variant,
        names,
        seeds,
        cohort=args.cohort,
        runs=args.runs,
        work=args.work,
        executor=executor_from_args(args),
    )
    est, facts = summarise(dirs, args.runs, args.split)
    print("\nWhat these numbers rest on:")
    for line in facts.lines():
        print(f"  {line}")
    what = f"AP (%) on the {args.split} split"
    if args.variant != "unregistered":
        what += (
            f" and sensitivity (eq. 6, %) of {args.variant} vs unregistered (lower = more robust)"
        )
    print(f"\n{what}; mean over {len(seeds)} seed(s), [95% CI], n/a = undefined:")
    for model, table in summary_tables(est, args.variant, args.split).items():
        print(f"\n{model}")
        print(table.rename_axis(index=None).to_string())
        for line in undefined_notes(table.attrs["undefined"]):
            print(f"  {line}")
    roots = sorted({str(Path(d).parents[2]) for d in dirs})
    print(f"\nrun folders under: {', '.join(roots)} (layout: docs/run-folder.md)")
    print("tables and figures: python -m benchmark analyze --runs " + str(args.runs))
    return 0
