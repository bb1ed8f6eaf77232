"""``--executor ray``: training units and per-patient registrations as Ray tasks.

A training unit asks for one GPU when the cluster has GPUs (and the unit is not pinned to the
CPU), else ``train.threads`` CPUs (1 by default); a patient's registration asks for
``cpus_per_patient`` CPUs. Tasks receive paths and small configs only, never arrays: the cohort
and the runs root must be on storage every node sees (``docs/scaling.md``). A task whose worker
or node dies is retried up to ``max_retries`` times; the retry resumes from the run folder's
checkpoint, and the run folder lock keeps two workers from writing the same run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmark.executors.local import reason
from benchmark.executors.locks import read_owner
from benchmark.executors.progress import MatrixProgress
from benchmark.executors.units import register_patient_unit, train_unit
from benchmark.run_folder import is_finished, label, log_path, unit_dir

RAY_HINT = (
    "--executor ray needs Ray, an optional extra: pip install 'phasebench[ray]' "
    "(or pip install 'ray[default]'); --executor local works without it"
)
LOCK_WAIT = 180.0
"""Seconds a retried unit waits for a dead worker's lock (NFSv4 frees it after its 90 s lease)."""


def import_ray() -> Any:
    """The ``ray`` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_HINT) from None
    return ray


class RayExecutor:
    """Run units on a Ray cluster (``address``: ``auto``, ``HOST:PORT``, ``ray://HOST:PORT``).

    Without ``address`` and without a running Ray in this process, a local Ray instance is
    started on this machine. ``poll`` seconds between progress updates.
    """

    name = "ray"
    remote = True

    def __init__(
        self,
        address: str | None = None,
        model_modules: Sequence[str] = (),
        *,
        max_retries: int = 2,
        cpus_per_patient: int = 1,
        lock_wait: float = LOCK_WAIT,
        poll: float = 5.0,
    ):
        self.ray = import_ray()
        if not self.ray.is_initialized():
            self.ray.init(address=address)
        self.model_modules = tuple(model_modules)
        self.max_retries, self.cpus_per_patient = int(max_retries), int(cpus_per_patient)
        self.lock_wait, self.poll = float(lock_wait), float(poll)

    def _unit_options(self, config: dict[str, Any], cluster_gpus: float) -> dict[str, Any]:
        cpus = int(config["train"].get("threads") or 1)
        gpus = 1 if cluster_gpus > 0 and config["train"]["device"] != "cpu" else 0
        return {"num_cpus": cpus, "num_gpus": gpus, "max_retries": self.max_retries}

    def run_units(
        self, configs: Sequence[dict[str, Any]], report: Callable[[str], None] = print
    ) -> list[dict[str, Any]]:
        """Run every unit as a task, report progress; returns the configs of failed units."""
        ray = self.ray
        progress = MatrixProgress(len(configs), report)
        task = ray.remote(train_unit)
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        refs: dict[Any, dict[str, Any]] = {}
        for config in configs:
            if is_finished(config):
                progress.on_skipped(label(config))
                continue
            options = self._unit_options(config, cluster_gpus)
            ref = task.options(**options).remote(config, self.model_modules, self.lock_wait)
            refs[ref] = config
        failed = []
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll)
            for ref in ready:
                config = refs[ref]
                try:
                    outcome = ray.get(ref)
                except Exception as err:  # task error, or its worker died past max_retries
                    progress.on_failed(label(config), log_path(config), reason(err))
                    failed.append(config)
                    continue
                if outcome.skipped:
                    progress.on_skipped(label(config), started=True)
                else:
                    progress.on_done(label(config), outcome.seconds)
            progress.set_running(sum(read_owner(unit_dir(refs[r])) is not None for r in pending))
        progress.finish()
        return failed

    def register_patients(
        self, source_root: str | Path, writer: Any, pids: Sequence[str], variant: str, backend: Any
    ) -> Iterator[str]:
        """Register each patient as a task; yields patient ids as they finish."""
        ray = self.ray
        task = ray.remote(register_patient_unit).options(
            num_cpus=self.cpus_per_patient, max_retries=self.max_retries
        )
        pending = [
            task.remote(str(source_root), writer, pid, variant, backend, self.cpus_per_patient)
            for pid in pids
        ]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            yield ray.get(ready[0])
