"""The command line: one option name per concept, old spellings kept for one release."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli

REPO = Path(__file__).resolve().parents[1]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser, by its full name (``data synth``)."""
    out = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out[name] = sub
                out.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return out


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {o: a for a in parser._actions for o in a.option_strings if a.help != argparse.SUPPRESS}


def test_one_name_per_concept_across_commands():
    commands = _subparsers(cli.build_parser())
    runs_folder = {n for n, p in commands.items() if "runs" in {a.dest for a in p._actions}}
    assert {"train", "run", "robustness", "analyze", "compare", "report"} <= runs_folder
    for name in runs_folder:
        assert "--runs" in _options(commands[name]), name
    for name, parser in commands.items():
        options = _options(parser)
        for option, concept in (
            ("--workers", "workers"), ("--profile", "profile"), ("--cohort", "cohort"),
            ("--work", "work"),
        ):
            holders = [o for o, a in options.items() if a.dest == concept]
            assert holders in ([], [option]), (name, holders)


def test_old_runs_spelling_of_train_still_works_and_says_so(capsys):
    parser = cli.build_parser()
    args = parser.parse_args(["train", "--cohort", "c", "--model", "m", "--out", "elsewhere"])
    assert args.runs == "elsewhere"
    err = capsys.readouterr().err
    assert "--out is deprecated" in err and "use --runs" in err
    args = parser.parse_args(["train", "--cohort", "c", "--model", "m", "--runs", "r"])
    assert args.runs == "r" and capsys.readouterr().err == ""
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    assert "--out" not in capsys.readouterr().out


def test_analysis_commands_take_the_cohort_as_a_folder_or_its_name(tmp_path):
    from tiny_cohort import make_cohort

    make_cohort(tmp_path / "mine", patients=3, size=32, slices=3)
    parser = cli.build_parser()
    for command in ("analyze", "compare", "report"):
        extra = ["--runs", "r", *(["--model", "gssd"] if command == "compare" else [])]
        by_folder = parser.parse_args([command, *extra, "--cohort", str(tmp_path / "mine")])
        by_name = parser.parse_args([command, *extra, "--cohort", "mine"])
        assert by_folder.cohort == by_name.cohort == "mine", command


def test_help_loads_no_heavy_library():
    """``--help`` of every command builds the parser without torch, pandas or the stages."""
    code = (
        "import sys; from benchmark import cli; cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'pandas', 'matplotlib', 'scipy', 'nibabel', "
        "'benchmark.runner', 'registration.stage', 'benchmark.phantom.synth') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.strip() == "[]"
