"""``python -m benchmark <command>``: the staged command line.

Commands are discovered from :mod:`benchmark.commands`; each stage reads and writes folders
(cohort, variant, run folder) so it can be rerun alone and resumed.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

import benchmark
from benchmark import commands

USER_ERRORS = (ValueError, KeyError, OSError, ImportError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark",
        description="phasebench: robustness benchmark for lesion detectors on multiphase liver CT",
    )
    parser.add_argument("--version", action="version", version=f"phasebench {benchmark.__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    data = top.add_parser("data", help="make, import, export and inspect cohorts")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    found = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "register"):
            found.append(module)
    found.sort(key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
    for module in found:
        module.register(data_sub if getattr(module, "GROUP", None) == "data" else top)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if args.debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
