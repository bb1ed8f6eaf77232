"""Register a cohort into a variant: per 2D axial slice (the paper's), or per 3D volume
(:mod:`registration.volume`), each moving phase onto portal.

Which way, and with which elastix maps, the variant's name says
(:mod:`registration.variants`: ``nonrigid``, ``nonrigid-fast``, ``nonrigid-3d``, ...); the
maps are in :mod:`registration.presets`. What follows describes the 2D registration.

Only the slices the detector dataset can touch are registered: slices whose lesion mask is
non-empty plus their ``z-1`` / ``z+1`` neighbours (the detector input stacks three adjacent
slices). Every other slice is copied unregistered and logged with status ``copied``. A slice
whose registration fails (:class:`~registration.backends.ElastixError`: elastix itself failed
or gave non-finite output) is kept unregistered, logged with status ``failed`` and listed in the
patient's ``meta["registration"]["failed"]``; any other exception is a bug and propagates.

Every slice's transform is saved with the variant (:mod:`registration.transforms`). A
``nonrigid`` run starts from the saved ``affine`` transforms of the same slices when the
``affine`` variant of the same dimensions and preset was registered first from the same data
with the same backend: elastix's
non-rigid sequence begins with exactly that affine registration, so this skips recomputing it
and gives bit-identical results (log column ``initial``: ``affine``).

Masks follow their phase's transform with nearest-neighbour interpolation
(``FinalBSplineInterpolationOrder 0``): the liver masks of moving phases, and the lesion mask
when its ``lesion_phase`` is not portal. For synthetic patients the variant stores the RESIDUAL
true displacement after registration, so it stays a complete cohort whose remaining
misalignment can be measured.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import hashlib
import io
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from benchmark.atomic import write_text
from benchmark.cohort import UNREGISTERED, Cohort, CohortError, CohortWriter, Patient, variant_dir
from benchmark.vocabulary import FIXED_PHASE, PHASES
from registration.backends import (
    Backend,
    ElastixError,
    ParameterMap,
    SliceRegistration,
    check_backend,
    get_backend,
    set_threads,
)
from registration.metrics import MOVING_PHASES, body_ncc, residual_displacement, touched_slices
from registration.presets import describe, parameter_maps
from registration.transforms import (
    SliceKey,
    read_record,
    save_transforms,
    slice_maps,
    transforms_path,
    volume_maps,
)
from registration.variants import Variant, parse_variant
from registration.volume import register_volume

__all__ = ["register_into", "register_patient", "register_variant"]

LOG_NAME = "registration_log.csv"
LOG_DIR = "logs"
LOG_COLUMNS = (
    "patient", "slice", "phase", "method", "seconds", "ncc_before", "ncc_after", "status", "error",
    "lesion_px_before", "lesion_px_after", "initial",
)


def _check(reg: SliceRegistration) -> None:
    if not np.isfinite(reg.warped).all():
        raise ElastixError("registration produced non-finite intensities")


class RegisteredPatient(NamedTuple):
    """What :func:`register_patient` returns."""

    patient: Patient
    rows: list[dict[str, Any]]
    transforms: dict[SliceKey, list[ParameterMap]] | dict[str, list[ParameterMap]]
    """elastix parameter maps of every registered ``(slice, phase)`` (2D) or phase (3D)"""


def register_patient(
    patient: Patient, variant: str | Variant, backend: Backend,
    on_slice: Callable[[], Any] | None = None,
    initial: dict[SliceKey, list[ParameterMap]] | dict[str, list[ParameterMap]] | None = None,
) -> RegisteredPatient:
    """Register one patient as ``variant`` (a name such as ``nonrigid`` or ``nonrigid-3d``);
    returns the variant patient, the log rows and the transforms.

    2D: every touched slice; ``on_slice`` is called after each (all moving phases), e.g. for
    progress. 3D (:func:`registration.volume.register_volume`): every moving phase volume;
    ``on_slice`` is called after each phase. ``initial``: affine transforms of this patient
    (per ``(slice, phase)`` in 2D, per phase in 3D; ``nonrigid`` only, a backend with
    ``reuses_affine``); slices or phases without one run the whole sequence.
    """
    spec = variant if isinstance(variant, Variant) else parse_variant(variant)
    method = spec.method
    if initial and not (method == "nonrigid" and getattr(backend, "reuses_affine", False)):
        raise ValueError(f"initial transforms are only used by nonrigid on a backend that "
                         f"reuses affine transforms, not {method} on {backend.name}")
    if spec.dims == 3:
        touched_z = touched_slices(patient.lesion)
        out, rows, volumes, failed = register_volume(patient, spec, backend, touched_z,
                                                     on_phase=on_slice, initial=initial)
        out.meta = _registration_meta(patient, spec, backend, touched_z.tolist(), failed)
        return RegisteredPatient(out, rows, volumes)
    initial = initial or {}
    maps = parameter_maps(spec)
    phases = {p: v.copy() for p, v in patient.phases.items()}
    liver = {p: v.copy() for p, v in patient.liver.items()} if patient.liver else None
    disp = {p: v.copy() for p, v in patient.displacement.items()} if patient.displacement else None
    lesion = patient.lesion.copy()
    fixed = patient.phases[FIXED_PHASE]
    spacing = (float(patient.spacing[1]), float(patient.spacing[2]))
    touched = set(touched_slices(patient.lesion).tolist())
    rows: list[dict[str, Any]] = []
    transforms: dict[SliceKey, list[ParameterMap]] = {}
    failed: list[list[Any]] = []
    for z in range(fixed.shape[0]):
        for phase in MOVING_PHASES:
            moving = patient.phases[phase][z]
            start_from = initial.get((z, phase))
            row = {"patient": patient.id, "slice": z, "phase": phase, "method": method,
                   "seconds": 0.0, "ncc_before": body_ncc(fixed[z], moving),
                   "ncc_after": float("nan"), "status": "copied", "error": "",
                   "lesion_px_before": "", "lesion_px_after": "", "initial": ""}
            rows.append(row)
            if z not in touched:
                continue
            start = time.perf_counter()
            try:
                reg = backend.register(fixed[z], moving, spacing,
                                       maps[1:] if start_from else maps, initial=start_from)
                _check(reg)
                new_liver = (
                    backend.warp_mask(liver[phase][z], reg) if liver and phase in liver else None
                )
                new_lesion = (
                    backend.warp_mask(patient.lesion[z], reg)
                    if patient.lesion_phase == phase else None
                )
                new_disp = (
                    residual_displacement(disp[phase][z], backend.displacement(reg), spacing)
                    if disp and phase in disp else None
                )
                result_maps = backend.transform_maps(reg)
            except ElastixError as err:  # logged and flagged; the slice stays unregistered
                row.update(status="failed", error=f"{type(err).__name__}: {err}"[:300])
                failed.append([z, phase])
            else:
                phases[phase][z] = reg.warped
                if new_liver is not None:
                    liver[phase][z] = new_liver
                if new_lesion is not None:
                    lesion[z] = new_lesion
                    row.update(lesion_px_before=int(patient.lesion[z].sum()),
                               lesion_px_after=int(new_lesion.sum()))
                if new_disp is not None:
                    disp[phase][z] = new_disp
                transforms[(z, phase)] = result_maps
                row.update(status="registered", ncc_after=body_ncc(fixed[z], reg.warped),
                           initial="affine" if start_from else "")
            row["seconds"] = time.perf_counter() - start
        if on_slice is not None and z in touched:
            on_slice()
    out = Patient(
        id=patient.id, phases=phases, lesion=lesion, lesion_phase=patient.lesion_phase,
        spacing=patient.spacing, origin=patient.origin, split=patient.split, liver=liver,
        displacement=disp,
        meta=_registration_meta(patient, spec, backend, sorted(touched), failed),
    )
    return RegisteredPatient(out, rows, transforms)


def _registration_meta(
    patient: Patient, variant: Variant, backend: Backend, slices: list[int], failed: list[Any]
) -> dict[str, Any]:
    """The patient's meta with what registered it (``meta["registration"]``)."""
    return {**patient.meta, "registration": {
        "variant": variant.name, "method": variant.method, "dims": variant.dims,
        "preset": variant.preset, "backend": backend.name, "slices": slices, "failed": failed}}


def data_fingerprint(patient: Patient) -> str:
    """SHA-1 of a patient's four phase volumes: saved transforms fit only these images."""
    digest = hashlib.sha1()
    for phase in PHASES:
        digest.update(np.ascontiguousarray(patient.phases[phase], dtype=np.float32).tobytes())
    return digest.hexdigest()


def reusable_affine(
    source: Path, patient_id: str, fingerprint: str, backend: Backend, variant: Variant
) -> dict[SliceKey, list[ParameterMap]] | dict[str, list[ParameterMap]]:
    """The saved transforms of the ``affine`` variant of the same dimensions and preset as
    ``variant`` for a patient, when they were made from the same images
    (:func:`data_fingerprint`) by the same backend, and that backend can start from them;
    otherwise nothing. Per ``(slice, phase)`` in 2D, per phase in 3D."""
    affine = variant.with_method("affine")
    path = transforms_path(variant_dir(source, affine.name), patient_id)
    if not getattr(backend, "reuses_affine", False) or not path.exists():
        return {}
    try:
        record = read_record(path)
    except ValueError:
        return {}
    # files written before dimensions and presets existed are 2D with the default maps
    made = (record.get("method"), record.get("dims", 2), record.get("preset", "default"),
            record.get("backend"), record.get("data_sha1"))
    if made != ("affine", affine.dims, affine.preset, backend.name, fingerprint):
        return {}
    return volume_maps(record) if affine.dims == 3 else slice_maps(record)


def _rows_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def _init_worker(backend: str | Backend, threads: int, ticks: Any = None) -> None:
    """Load the backend once per process; ``ticks``: a queue told of every registered slice."""
    set_threads(threads, backend if isinstance(backend, str) else backend.name)
    _WORKER["backend"] = get_backend(backend) if isinstance(backend, str) else backend
    _WORKER["on_slice"] = None if ticks is None else functools.partial(ticks.put, None)


def _run_patient(
    source: Path, writer: CohortWriter, pid: str, variant: str,
    on_slice: Callable[[], Any] | None = None,
) -> tuple[str, list[dict[str, Any]], float]:
    start = time.perf_counter()
    spec = parse_variant(variant)
    backend = _WORKER["backend"]
    on_slice = on_slice or _WORKER.get("on_slice")
    patient = Cohort(source).load(pid, liver=True, displacement=True)
    fingerprint = data_fingerprint(patient)
    initial = (reusable_affine(source, pid, fingerprint, backend, spec)
               if spec.method == "nonrigid" else None)
    out, rows, transforms = register_patient(patient, spec, backend, on_slice, initial)
    about = {"patient": pid, "variant": spec.name, "method": spec.method, "dims": spec.dims,
             "preset": spec.preset, "backend": backend.name, "data_sha1": fingerprint}
    # transforms and log first, the patient folder last: a patient is done when written
    path = transforms_path(writer.root, pid)
    if spec.dims == 3:
        save_transforms(path, {}, about, volumes=transforms)
    else:
        save_transforms(path, transforms, about)
    write_text(writer.root / LOG_DIR / f"{pid}.csv", _rows_csv(rows))
    writer.write_patient(out)
    return pid, rows, time.perf_counter() - start


def register_into(
    source_root: str | Path, writer: CohortWriter, pid: str, variant: str,
    backend: str | Backend, threads: int,
) -> str:
    """Register patient ``pid`` of the cohort at ``source_root`` into ``writer`` (the variant's
    :class:`~benchmark.cohort.CohortWriter`) in this process: one unit of a remote executor.

    Idempotent: a patient folder is written atomically, so a killed call leaves nothing
    half-written, and a patient already written returns at once. Returns ``pid``.
    """
    if pid in writer.done():
        return pid
    _init_worker(backend, threads)
    return _run_patient(Path(source_root), writer, pid, variant)[0]


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class WorkerPool(ProcessPoolExecutor):
    """Registration processes that put one item on :attr:`ticks` per registered slice, so
    progress moves per slice, not per patient."""

    def __init__(self, workers: int, backend: str | Backend, threads: int):
        context = get_context("spawn")
        self.ticks = context.SimpleQueue()
        super().__init__(workers, mp_context=context, initializer=_init_worker,
                         initargs=(backend, threads, self.ticks))


@contextlib.contextmanager
def worker_pool(workers: int, backend: str = "itk-elastix") -> Iterator[WorkerPool | None]:
    """Processes to share between several :func:`register_variant` calls (``pool=``), so each
    worker loads ITK once; ``None`` for one worker. Workers start on the first task."""
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        yield None
        return
    with WorkerPool(workers, backend, max(1, available_cores() // workers)) as pool:
        yield pool


def register_variant(
    cohort_root: str | Path,
    variant: str,
    *,
    workers: int = 1,
    backend: str | Backend = "itk-elastix",
    progress: bool = True,
    executor: Any = None,
    pool: ProcessPoolExecutor | None = None,
) -> Cohort:
    """Write ``variant_dir(cohort_root, variant)``: the cohort registered as ``variant``
    (a name of :mod:`registration.variants`: ``nonrigid``, ``nonrigid-fast``, ``nonrigid-3d``,
    ...; its manifest's params record method, dimensions, preset, backend and the maps).

    Resumable: patients already written are skipped. Each patient is one unit of work;
    ``workers`` processes run in parallel with ``cores // workers`` ITK threads each (a
    backend passed as an object instead of a name runs in this process). The per-slice log
    is written to ``<variant dir>/registration_log.csv``. ``executor``: a cluster executor
    (``benchmark.executors``, e.g. Ray) that runs each patient as a task instead. ``pool``:
    processes from :func:`worker_pool` (same backend) used instead of starting new ones.
    """
    spec = parse_variant(variant)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    source = Cohort(cohort_root)
    if source.variant != UNREGISTERED:
        raise CohortError(f"{source.root}: is the {source.variant!r} variant; register the "
                          "unregistered cohort")
    backend_name = backend if isinstance(backend, str) else backend.name
    if isinstance(backend, str):
        check_backend(backend)
    writer = CohortWriter(
        variant_dir(cohort_root, variant), name=source.name, kind=source.kind, variant=variant,
        params={"method": spec.method, "dims": spec.dims, "preset": spec.preset,
                "backend": backend_name, "parameter_maps": describe(spec),
                "source": source.manifest.get("params", {})},
        provenance={"source": str(source.root.resolve()), "fixed_phase": FIXED_PHASE},
    )
    todo = [pid for pid in source.patient_ids if pid not in writer.done()]
    # progress in slices (2D) or phase volumes (3D)
    counts = {pid: len(MOVING_PHASES) if spec.dims == 3 else
              len(touched_slices(_lesion(source, pid))) for pid in todo}
    todo.sort(key=lambda pid: -counts[pid])  # longest first: workers finish closer together
    threads = max(1, available_cores() // workers)
    bar = _progress(sum(counts.values()), variant, progress,
                    "volume" if spec.dims == 3 else "slice")
    try:
        if executor is not None:
            for pid in executor.register_patients(source.root, writer, todo, variant, backend):
                bar.update(counts[pid])
        elif pool is not None and todo:
            _run_in_pool(pool, source.root, writer, todo, variant, bar, counts)
        elif workers == 1 or len(todo) <= 1 or not isinstance(backend, str):
            _init_worker(backend, threads)
            for pid in todo:
                _run_patient(source.root, writer, pid, variant, on_slice=lambda: bar.update(1))
        else:
            with worker_pool(workers, backend) as own:
                _run_in_pool(own, source.root, writer, todo, variant, bar, counts)
    finally:
        bar.close()
    cohort = writer.finish(order=source.patient_ids)
    _merge_logs(writer.root, source.patient_ids)
    return cohort


def _run_in_pool(
    pool: ProcessPoolExecutor, source: Path, writer: CohortWriter, todo: list[str], method: str,
    bar: Any, counts: dict[str, int],
) -> None:
    """Run ``todo`` in ``pool``; ``bar`` moves per slice with a :class:`WorkerPool`, else per
    patient (``counts``: touched slices per patient)."""
    ticks = getattr(pool, "ticks", None)
    pending = {pool.submit(_run_patient, source, writer, pid, method) for pid in todo}
    while pending:
        finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
        # a worker puts a slice's tick before its patient's result: none is left behind
        while ticks is not None and not ticks.empty():
            ticks.get()
            bar.update(1)
        for future in finished:
            pid = future.result()[0]
            if ticks is None:
                bar.update(counts[pid])


def _lesion(source: Cohort, pid: str) -> np.ndarray:
    from benchmark.cohort import load_volume

    return load_volume(source.patient_dir(pid) / "lesion.nii.gz")[0]


def _progress(total: int, variant: str, enabled: bool, unit: str) -> Any:
    from tqdm.auto import tqdm

    # per slice (2D) or phase volume (3D) with an ETA; off a terminal at most one update a minute
    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=f"register {variant}", unit=unit, disable=not enabled,
                mininterval=0.1 if interactive else 60.0)


def _merge_logs(root: Path, order: list[str]) -> None:
    parts = []
    for i, pid in enumerate(order):
        path = root / LOG_DIR / f"{pid}.csv"
        if not path.exists():
            raise CohortError(f"{path}: registration log of patient {pid} is missing")
        text = path.read_text()
        parts.append(text if i == 0 else text.split("\n", 1)[1])
    write_text(root / LOG_NAME, "".join(parts) if parts else _rows_csv([]))


def read_log(cohort_root: str | Path, variant: str) -> Any:
    """The per-slice registration log of a variant as a pandas DataFrame."""
    import pandas as pd

    path = variant_dir(cohort_root, variant) / LOG_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no registration log; run `python -m benchmark "
                                f"register --variant {variant}` first")
    return pd.read_csv(path, keep_default_na=False, na_values=["nan", ""])
