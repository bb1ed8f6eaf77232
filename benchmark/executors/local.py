"""``--executor local``: this machine; one training per GPU at a time, or ``train.cpu_units``
at a time on a machine without a GPU."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any

from benchmark.executors.progress import MatrixProgress
from benchmark.executors.units import UnitOutcome, train_unit
from benchmark.run_folder import is_finished, label, log_path


class LocalExecutor:
    """Run training units on this machine.

    With several GPUs (``gpus``, default every visible CUDA device) one spawned process per
    GPU trains one unit at a time, pinned to its GPU by ``CUDA_VISIBLE_DEVICES`` (so
    ``train.device`` ``auto``/``cuda`` means that GPU). Without a GPU, or when every unit is
    pinned to ``cpu``, ``train.cpu_units`` spawned processes (the smallest value among the
    units) train one unit each at a time, each with its own ``train.threads``: a unit computes
    the same numbers in a pool as alone. Otherwise (one GPU, a unit naming ``cuda:1``, or
    ``cpu_units`` 1) the units run one after another in this process.
    Registration stays with ``register_variant``'s own ``--workers`` processes (this executor
    is not ``remote``). ``unit`` is the function run per unit config (default
    :func:`~benchmark.executors.units.train_unit`; it must be importable by name, since the
    GPU processes receive it by reference).
    """

    name = "local"
    remote = False

    def __init__(
        self,
        model_modules: Sequence[str] = (),
        gpus: Sequence[int] | None = None,
        unit: Callable[..., UnitOutcome] = train_unit,
    ):
        if gpus is None:
            import torch

            gpus = range(torch.cuda.device_count())
        self.gpus = [int(g) for g in gpus]
        self.model_modules = tuple(model_modules)
        self.unit = unit

    def run_units(
        self, configs: Sequence[dict[str, Any]], report: Callable[[str], None] = print
    ) -> list[dict[str, Any]]:
        """Run every unit, report progress; returns the configs of the units that failed."""
        progress = MatrixProgress(len(configs), report)
        todo = []
        for config in configs:
            if is_finished(config):
                progress.on_skipped(label(config))
            else:
                todo.append(config)
        cpu_slots = min((c.get("train", {}).get("cpu_units", 1) for c in todo), default=1)
        on_cpu = not self.gpus or all(_device(c) == "cpu" for c in todo)
        if len(self.gpus) > 1 and len(todo) > 1 and not any(map(_pinned, todo)):
            failed = self._pool(todo, progress, self.gpus)
        elif on_cpu and cpu_slots > 1 and len(todo) > 1:
            failed = self._pool(todo, progress, [None] * cpu_slots)
        else:
            failed = self._sequential(todo, progress)
        progress.finish()
        return failed

    def _sequential(
        self, todo: list[dict[str, Any]], progress: MatrixProgress
    ) -> list[dict[str, Any]]:
        failed = []
        for config in todo:
            progress.on_started(label(config))
            try:
                outcome = self.unit(config, self.model_modules)
            except Exception as err:  # reported with its log; the other units go on
                progress.on_failed(label(config), log_path(config), reason(err))
                failed.append(config)
            else:
                _finished(progress, config, outcome)
        return failed

    def _pool(
        self, todo: list[dict[str, Any]], progress: MatrixProgress, slots: list[int | None]
    ) -> list[dict[str, Any]]:
        """One spawned process per slot: a GPU index it is pinned to, or ``None`` (CPU)."""
        context = get_context("spawn")
        free = context.Queue()
        for gpu in slots:
            free.put(gpu)
        failed = []
        with ProcessPoolExecutor(
            len(slots), mp_context=context, initializer=_pin_gpu, initargs=(free,)
        ) as pool:
            futures: dict[Future, dict[str, Any]] = {
                pool.submit(self.unit, config, self.model_modules): config for config in todo
            }
            queued = list(todo)
            for config in queued[: len(slots)]:
                progress.on_started(label(config))
            del queued[: len(slots)]
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    config = futures[future]
                    try:
                        _finished(progress, config, future.result())
                    except Exception as err:
                        progress.on_failed(label(config), log_path(config), reason(err))
                        failed.append(config)
                    if queued:
                        progress.on_started(label(queued.pop(0)))
        return failed


def _device(config: dict[str, Any]) -> str:
    return config.get("train", {}).get("device", "auto")


def _pinned(config: dict[str, Any]) -> bool:
    """Whether the unit names its device itself (then it is not placed on a GPU here)."""
    return _device(config) not in ("auto", "cuda")


def _pin_gpu(free: Any) -> None:
    gpu = free.get()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)


def _finished(progress: MatrixProgress, config: dict[str, Any], outcome: UnitOutcome) -> None:
    if outcome.skipped:
        progress.on_skipped(label(config), started=True)
    else:
        progress.on_done(label(config), outcome.seconds)


def reason(err: BaseException) -> str:
    cause = getattr(err, "cause", None)  # Ray wraps the worker's exception
    if isinstance(cause, BaseException):
        err = cause
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip().rstrip(":")[:300]
