"""Executors: where the matrix's training units and the registration's patients run.

``local`` (default) runs on this machine; ``ray`` runs on a Ray cluster (optional extra).
Both write the same run folders (``docs/run-folder.md``) and the same variant cohorts, so
``analyze`` cannot tell which one ran. See ``docs/scaling.md``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from benchmark.executors.local import LocalExecutor
from benchmark.executors.locks import RunLock, RunLocked, read_owner
from benchmark.executors.progress import MatrixProgress
from benchmark.executors.units import UNIT_LOG, train_unit

EXECUTORS = ("local", "ray")

__all__ = [
    "EXECUTORS",
    "UNIT_LOG",
    "LocalExecutor",
    "MatrixProgress",
    "RunLock",
    "RunLocked",
    "add_executor_args",
    "executor_from_args",
    "make_executor",
    "read_owner",
    "train_unit",
]


def make_executor(
    name: str = "local", address: str | None = None, model_modules: Sequence[str] = ()
) -> Any:
    """``LocalExecutor`` or ``RayExecutor`` (ImportError with the install hint without Ray)."""
    if name == "local":
        if address:
            raise ValueError("--ray-address needs --executor ray")
        return LocalExecutor(model_modules)
    if name == "ray":
        from benchmark.executors.ray import RayExecutor

        return RayExecutor(address, model_modules)
    raise ValueError(f"unknown executor {name!r}; use one of {', '.join(EXECUTORS)}")


def add_executor_args(parser: argparse.ArgumentParser) -> None:
    """``--executor local|ray`` and ``--ray-address ADDR``."""
    parser.add_argument(
        "--executor",
        default="local",
        choices=EXECUTORS,
        help="local: this machine (one unit per GPU at a time); ray: a Ray cluster, one task "
        "per unit (pip install 'phasebench[ray]'; docs/scaling.md). Default local",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="Ray cluster to join: auto, HOST:6379 or ray://HOST:10001 (default: the "
        "RAY_ADDRESS variable, else a Ray instance started on this machine)",
    )


def executor_from_args(args: argparse.Namespace) -> Any:
    return make_executor(args.executor, args.ray_address, getattr(args, "model_module", []) or [])
