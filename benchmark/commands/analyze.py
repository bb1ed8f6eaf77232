"""``analyze``, ``compare`` and ``report``: the paper's robustness analysis for a run folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.analysis.defaults import DEFAULT_BOOTSTRAP, MIN_LESION_BOXES
from benchmark.commands import add_model_module_arg, add_runs_cohort_arg, load_model_modules

if TYPE_CHECKING:
    import pandas as pd

ORDER = 80


def register(subparsers: argparse._SubParsersAction) -> None:
    analyze = subparsers.add_parser(
        "analyze",
        help="Tables I, II, III, S1, S2 and Fig. 5 beside the published numbers; paper audit",
        description=(
            "With --runs: write the paper's Tables I, II (registration stage), III (when ablation "
            "runs exist), S1 and S2 as CSV, Markdown and LaTeX, each with our value, the "
            "published value and the difference, plus Fig. 5 (PNG, PDF). A partial run folder "
            "gives what it can; README.md in the output names what is missing. With --published: "
            "regenerate Table S2 and Fig. 5 from the published Tables I and S1 and audit the "
            "paper's tables for inconsistencies."
        ),
    )
    source = analyze.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--runs",
        type=Path,
        metavar="RUNS",
        help="run folder (RUNS/<cohort>/<variant>/<model>/seed<k>)",
    )
    source.add_argument(
        "--published", action="store_true", help="analyse and audit the published tables alone"
    )
    analyze.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: RUNS/analysis, or work/published-analysis with --published)",
    )
    add_runs_cohort_arg(analyze)
    analyze.add_argument(
        "--no-published-bars", action="store_true", help="Fig. 5 without the published bars"
    )
    _uncertainty_args(analyze)
    add_model_module_arg(analyze)
    analyze.set_defaults(func=_analyze)

    comp = subparsers.add_parser(
        "compare",
        help="place one model among the published sensitivities (rank table, Fig. 5, Table I)",
        description=(
            "Rank the model's average sensitivity (eq. 6 over the eight AP metrics) among the "
            "paper's models per registration method, draw Fig. 5 with its bars highlighted and "
            "put its unregistered AP beside the published Table I."
        ),
    )
    comp.add_argument("--runs", type=Path, required=True, metavar="RUNS", help="run folder")
    comp.add_argument("--model", required=True, help="registry name of the model to place")
    comp.add_argument(
        "--out", type=Path, default=None, help="output folder (default: RUNS/compare-<model>)"
    )
    add_runs_cohort_arg(comp)
    _uncertainty_args(comp)
    add_model_module_arg(comp)
    comp.set_defaults(func=_compare)

    report = subparsers.add_parser(
        "report",
        help="one self-contained HTML report of a run folder",
        description=(
            "Run the analysis and write a single HTML file (tables, Fig. 5 embedded as images, "
            "Table II, paper audit, run configs, software versions, timing) that opens in any browser."
        ),
    )
    report.add_argument("--runs", type=Path, required=True, metavar="RUNS", help="run folder")
    report.add_argument(
        "--out", type=Path, default=None, help="HTML file (default: RUNS/report.html)"
    )
    add_runs_cohort_arg(report)
    _uncertainty_args(report)
    report.set_defaults(func=_report)


def _uncertainty_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=DEFAULT_BOOTSTRAP,
        metavar="N",
        help=f"patient resamples for the 95%% intervals of AP and sensitivity (default "
        f"{DEFAULT_BOOTSTRAP}; needs the runs' predictions_<split>.csv; 0 = no intervals)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument(
        "--min-boxes",
        type=int,
        default=MIN_LESION_BOXES,
        metavar="N",
        help=f"sensitivities of a split with fewer lesion boxes are undefined (n/a; default "
        f"{MIN_LESION_BOXES})",
    )


def _analyze(args: argparse.Namespace) -> int:
    from benchmark.analysis import pipeline

    load_model_modules(args)
    if args.published:
        out = args.out or Path("work") / "published-analysis"
        result = pipeline.analyze_published(out)
    else:
        out = args.out or args.runs / "analysis"
        result = pipeline.analyze_runs(
            args.runs,
            out,
            cohort=args.cohort,
            with_published=not args.no_published_bars,
            bootstrap=args.bootstrap,
            seed=args.seed,
            min_boxes=args.min_boxes,
        )
    _print_facts(result)
    _print(result)
    return 0


def _compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from benchmark.analysis import pipeline
    from benchmark.analysis.tables import display_label

    load_model_modules(args)
    out = args.out or args.runs / f"compare-{args.model}"
    result = pipeline.compare(
        args.runs,
        args.model,
        out,
        cohort=args.cohort,
        bootstrap=args.bootstrap,
        seed=args.seed,
        min_boxes=args.min_boxes,
    )
    _print_facts(result)
    rank = result.tables["rank"]
    print("\nAverage sensitivity (eq. 6 over the eight AP metrics, %) per registration method,")
    print("yours [95% CI] among the published ones (lower = more robust):")
    for section, part in rank.groupby("section", sort=False):
        shown = pd.DataFrame(
            {
                "rank": part["rank"].astype(str),
                "Methods": part["Methods"].map(display_label),
                "average sensitivity (%)": [
                    _cell(r.value, r.ci_low, r.ci_high, r.undefined_reason, r.source)
                    for r in part.rename(
                        columns={pipeline.SENSITIVITY_HEADER: "value"}
                    ).itertuples()
                ],
            }
        )
        print(f"\n{section}")
        print(shown.to_string(index=False))
    _print_cells(result.tables["sensitivity"])
    _print(result)
    return 0


def _cell(value, low, high, reason: str, source: str) -> str:
    if source == "published":
        return f"{value:.2f}"
    from benchmark.analysis.facts import format_estimate

    return format_estimate(value, low, high, reason)


def _print_cells(sens: pd.DataFrame) -> None:
    """Your eq. 6 sensitivity per cell and registration method, with intervals and reasons."""
    from benchmark.analysis.facts import format_estimate, undefined_notes

    if sens.empty:
        return
    text = sens.assign(
        cell=[
            f"{s} {m}" if s != "all" else "average"
            for s, m in zip(sens["split"], sens["metric"], strict=True)
        ],
        shown=[
            format_estimate(r.value, r.ci_low, r.ci_high, r.undefined_reason)
            for r in sens.itertuples()
        ],
    )
    table = text.pivot(index="cell", columns="registration", values="shown")
    table = table.reindex(
        index=list(dict.fromkeys(text["cell"])), columns=list(dict.fromkeys(text["registration"]))
    )
    print("\nYour sensitivity per metric (eq. 6, %) [95% CI]; n/a = undefined:")
    print(table.fillna("").rename_axis(index=None, columns=None).to_string())
    for reg, part in text[text["undefined_reason"] != ""].groupby("registration", sort=False):
        for line in undefined_notes(list(zip(part["cell"], part["undefined_reason"], strict=True))):
            print(f"  {reg}: {line}")


def _report(args: argparse.Namespace) -> int:
    from benchmark.analysis.report import write_report

    out = args.out or args.runs / "report.html"
    path = write_report(
        args.runs,
        out,
        cohort=args.cohort,
        bootstrap=args.bootstrap,
        seed=args.seed,
        min_boxes=args.min_boxes,
    )
    print(f"report: {path}")
    return 0


def _print_facts(result) -> None:
    if result.facts is not None:
        print("What these numbers rest on:")
        for line in result.facts.lines():
            print(f"  {line}")


def _print(result) -> None:
    for note in result.notes:
        print(note)
    print(f"wrote {len(result.files) + len(result.figures)} files to {result.out}")
    for line in result.missing:
        print(f"missing: {line}")
