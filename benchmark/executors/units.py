"""The units of work an executor runs, each a plain function of paths and small configs.

Nothing large travels to a worker: a training unit gets its resolved config (paths of the
cohort and the runs root inside) and a registration unit the cohort path, the variant writer
(a folder and a header) and a patient id. Everything a unit produces is written into folders
that every worker sees, so the driver only collects statuses.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmark.executors.locks import RunLock
from benchmark.run_folder import UNIT_LOG, is_finished, unit_dir
from benchmark.training_progress import ProgressDisplay


@dataclass(frozen=True)
class UnitOutcome:
    """What a finished training unit reports back to the driver."""

    run_dir: Path
    skipped: bool
    seconds: float


@contextlib.contextmanager
def unit_log(path: Path) -> Iterator[None]:
    """Send logging, stdout and stderr of this process to ``path`` (appended) meanwhile.

    Each attempt starts with a header naming the host and pid, so a resumed unit shows every
    attempt; an exception is written with its traceback before it propagates.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    with open(path, "a", buffering=1) as stream:
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        stream.write(
            f"=== attempt on {socket.gethostname()} pid {os.getpid()} at "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}"
            + ("" if gpus is None else f" CUDA_VISIBLE_DEVICES={gpus}")
            + " ===\n"
        )
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        level = root.level
        root.addHandler(handler)
        root.setLevel(min(level, logging.INFO) if level else logging.INFO)
        try:
            with contextlib.redirect_stdout(stream), contextlib.redirect_stderr(stream):
                yield
        except BaseException:
            stream.write(traceback.format_exc())
            raise
        finally:
            root.removeHandler(handler)
            root.setLevel(level)


def train_unit(
    config: dict[str, Any], model_modules: Sequence[str] = (), lock_wait: float = 0.0
) -> UnitOutcome:
    """Run one (model, variant, seed) unit under its run folder's lock; log to ``unit.log``.

    Finished units are skipped (also when another worker finished it while this one waited for
    the lock); an unfinished one resumes from its checkpoint (``benchmark.runner.run_unit``).
    ``model_modules`` are imported first, so detectors registered by ``--model-module`` exist
    in worker processes too. Raises :class:`~benchmark.executors.locks.RunLocked` when another
    live worker holds the run. Training progress goes to this process's stderr (not the unit
    log): a bar on a terminal, lines in a worker process that shares it with others.
    """
    from benchmark import runner
    from models.registry import load_module

    for module in model_modules:
        load_module(module)
    run_dir = unit_dir(config)
    start = time.perf_counter()
    progress = ProgressDisplay(sys.stderr, bar=False if multiprocessing.parent_process() else None)
    if is_finished(config):
        return UnitOutcome(run_dir, True, 0.0)
    with RunLock(run_dir, wait=lock_wait), unit_log(run_dir / UNIT_LOG):
        if is_finished(config):
            return UnitOutcome(run_dir, True, 0.0)
        runner.set_threads(config)
        runner.run_unit(config, progress)
    return UnitOutcome(run_dir, False, time.perf_counter() - start)


def register_patient_unit(
    source_root: str, writer: Any, pid: str, variant: str, backend: Any, threads: int
) -> str:
    """Register one patient into ``writer`` (a ``CohortWriter``); returns the patient id.

    Idempotent: the patient folder is written atomically, so a killed task leaves nothing
    half-written, and a retried task whose patient was already written returns at once
    (a finished patient folder is never replaced).
    """
    from registration.stage import register_into

    return register_into(source_root, writer, pid, variant, backend, threads)
