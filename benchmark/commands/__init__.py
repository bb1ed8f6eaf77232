"""CLI commands. Every module here defines ``register(subparsers)``; ``GROUP`` ("data" or
None) says whether it hangs under ``python -m benchmark data``, ``ORDER`` sorts ``--help``."""

from __future__ import annotations

import argparse
import sys


def add_model_module_arg(parser: argparse.ArgumentParser) -> None:
    """``--model-module MOD`` (repeatable): import a module that registers extra detectors."""
    parser.add_argument(
        "--model-module",
        action="append",
        default=[],
        metavar="MOD",
        help="import MOD before looking up models (your own @register_model detectors)",
    )


def cohort_of_runs(value: str) -> str:
    """``--cohort`` of the analysis commands: a cohort folder (its manifest names the runs'
    cohort) or that name as it appears under RUNS."""
    from pathlib import Path

    from benchmark.cohort import MANIFEST, Cohort, CohortError

    folder = Path(value)
    if not (folder / MANIFEST).is_file():
        return value
    try:
        return Cohort(folder).name
    except CohortError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_runs_cohort_arg(parser: argparse.ArgumentParser) -> None:
    """``--cohort DIR|NAME``: which cohort's runs, when RUNS holds several."""
    parser.add_argument(
        "--cohort",
        type=cohort_of_runs,
        default=None,
        metavar="DIR|NAME",
        help="the cohort whose runs to use when RUNS holds several: its folder or its name",
    )


def load_model_modules(args: argparse.Namespace) -> None:
    from models.registry import load_module

    for module in getattr(args, "model_module", []) or []:
        load_module(module)


class _DeprecatedAlias(argparse.Action):
    """Store like the new option, and tell the user to switch (on stderr)."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kwargs: object):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)  # type: ignore[arg-type]

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        print(
            f"note: {option_string} is deprecated and will be removed in the next release; "
            f"use {self.new}",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, values)


def add_deprecated_alias(
    parser: argparse.ArgumentParser, old: str, new: str, dest: str, **kwargs: object
) -> None:
    """Accept the old spelling ``old`` of option ``new`` (hidden from ``--help``) for one release."""
    parser.add_argument(
        old, dest=dest, action=_DeprecatedAlias, new=new, help=argparse.SUPPRESS, **kwargs
    )
