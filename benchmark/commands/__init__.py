"""CLI commands. Every module here defines ``register(subparsers)``; ``GROUP`` ("data" or
None) says whether it hangs under ``python -m benchmark data``, ``ORDER`` sorts ``--help``."""

from __future__ import annotations

import argparse


def add_model_module_arg(parser: argparse.ArgumentParser) -> None:
    """``--model-module MOD`` (repeatable): import a module that registers extra detectors."""
    parser.add_argument(
        "--model-module",
        action="append",
        default=[],
        metavar="MOD",
        help="import MOD before looking up models (your own @register_model detectors)",
    )


def load_model_modules(args: argparse.Namespace) -> None:
    from models.registry import load_module

    for module in getattr(args, "model_module", []) or []:
        load_module(module)
