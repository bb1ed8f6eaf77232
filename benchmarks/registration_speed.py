"""Seconds per slice of the registration stage (three moving phases onto portal), per variant,
and the fast preset as a ratio to the default maps measured in the same run.

Usage: ``python benchmarks/registration_speed.py [--patients 4] [--size 512] [--slices 6]
[--workers 2] [--presets default fast] [--cohort DIR]``

Registers a phantom cohort (synthesised in a temporary folder, or the first ``--patients`` of
an existing unregistered ``--cohort``, read in place; its variants are written to the temporary
folder) with :func:`registration.register_variant` exactly as ``python -m benchmark register
--variant all [--preset P]`` does: rigid, affine, then non-rigid, which starts from the saved
affine transforms of the same preset; per slice three registrations, mask warps and the
residual displacement; one pool of ``--workers`` processes shared by every variant. Prints per
variant the wall time per touched slice with the workers already started (ITK loaded), the CPU
time per slice of the worker processes (user + system, from /proc; on a machine shared with
other jobs it is inflated far less than the wall time), failures and Table II's liver Dice and
true residual; then the whole Table II, and each preset's wall and CPU time relative to
``default``. The load average is printed too.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmark.atomic import write_json
from benchmark.cohort import MANIFEST, Cohort
from benchmark.phantom import PhantomConfig, synthesize
from registration import alignment_table, register_variant
from registration.alignment import to_markdown
from registration.backends import BACKENDS, get_backend
from registration.stage import available_cores, read_log, worker_pool
from registration.variants import DEFAULT_PRESET, METHODS, PRESETS, family


def _ready() -> int:
    """A task that makes a worker start (its initializer loads ITK)."""
    time.sleep(0.2)
    return os.getpid()


def _start(pool: ProcessPoolExecutor | None, workers: int, backend: str) -> list[int]:
    """Load ITK in every worker (or in this process) before anything is timed; their pids."""
    if pool is None:
        get_backend(backend)
        return [os.getpid()]
    seen: set[int] = set()
    while len(seen) < workers:
        seen.update(f.result() for f in [pool.submit(_ready) for _ in range(workers)])
    return sorted(seen)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (Linux /proc; NaN elsewhere)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def _subset(source: Path, patients: int, root: Path) -> None:
    """A cohort at ``root`` made of the first ``patients`` of ``source`` (patient folders
    linked, not copied), so its variants are written under ``root``."""
    cohort = Cohort(source)
    if cohort.variant != "unregistered":
        raise SystemExit(f"{source}: is the {cohort.variant!r} variant; give the unregistered "
                         "cohort")
    root.mkdir(parents=True)
    (root / "patients").mkdir()
    ids = cohort.patient_ids[:patients]
    for pid in ids:
        (root / "patients" / pid).symlink_to(cohort.patient_dir(pid).resolve())
    manifest = dict(cohort.manifest)
    manifest["patients"] = [cohort.record(pid) for pid in ids]
    write_json(root / MANIFEST, manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=4, help="phantom patients (4)")
    parser.add_argument("--size", type=int, default=512, help="slice size in pixels (512)")
    parser.add_argument("--slices", type=int, default=6, help="slices per patient (6)")
    parser.add_argument("--cohort", type=Path, metavar="DIR",
                        help="use the first --patients of this unregistered cohort instead of "
                        "synthesising one (--size, --slices ignored)")
    parser.add_argument("--workers", type=int, default=available_cores(),
                        help="worker processes (default: one per core)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--presets", nargs="+", choices=PRESETS, default=list(PRESETS),
                        help="map presets to time (default: all; the ratios need 'default')")
    parser.add_argument("--backend", choices=BACKENDS, default="itk-elastix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="phasebench-regspeed-") as tmp:
        root = Path(tmp) / "cohort"
        if args.cohort is not None:
            _subset(args.cohort, args.patients, root)
            about = f"{args.patients} patients of {args.cohort}"
        else:
            config = PhantomConfig(size=args.size, slices=args.slices)
            synthesize(root, args.patients, args.seed, config, progress=False)
            about = (f"{args.patients} phantom patients, {args.size}x{args.size} px, "
                     f"{args.slices} slices, seed {args.seed}")
        print(f"{about}; {args.workers} workers on {available_cores()} cores; load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'variant':14s} {'slices':>6s} {'wall s/slice':>12s} {'cpu s/slice':>11s} "
              f"{'failed':>6s} {'liver Dice':>10s} {'residual mm':>11s}")
        timing: dict[str, tuple[float, float]] = {}
        with worker_pool(args.workers, args.backend) as pool:
            start = time.perf_counter()
            pids = _start(pool, args.workers, args.backend)
            print(f"(workers started, ITK loaded: {time.perf_counter() - start:.1f} s)")
            for preset in args.presets:
                for variant in family(2, preset):
                    if variant.method not in args.methods:
                        continue
                    cpu, start = _cpu_seconds(pids), time.perf_counter()
                    register_variant(root, variant.name, workers=args.workers,
                                     backend=args.backend, progress=False, pool=pool)
                    wall, cpu = time.perf_counter() - start, _cpu_seconds(pids) - cpu
                    log = read_log(root, variant.name)
                    done = log[log["status"] != "copied"]
                    slices = len(done.groupby(["patient", "slice"]))
                    failed = int((done["status"] == "failed").sum())
                    row = alignment_table(root, (variant.name,)).iloc[0]
                    timing[variant.name] = (wall / slices, cpu / slices)
                    print(f"{variant.name:14s} {slices:6d} {wall / slices:12.2f} "
                          f"{cpu / slices:11.2f} {failed:6d} {row['liver_dice']:10.4f} "
                          f"{row['residual_mm']:11.2f}", flush=True)
        print("\nTable II of this cohort:")
        print(to_markdown(alignment_table(root)))
    for preset in args.presets:
        if preset == DEFAULT_PRESET or DEFAULT_PRESET not in args.presets:
            continue
        for variant, reference in zip(family(2, preset), family(2), strict=True):
            if variant.name in timing and reference.name in timing:
                (wall, cpu), (wall0, cpu0) = timing[variant.name], timing[reference.name]
                print(f"{variant.name} / {reference.name}: wall {wall / wall0:.2f}, "
                      f"cpu {cpu / cpu0:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
