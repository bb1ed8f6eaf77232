"""Seconds per slice of the registration stage (three moving phases onto portal), per method.

Usage: ``python benchmarks/registration_speed.py [--patients 4] [--size 512] [--slices 6]
[--workers 2]``

Synthesises a phantom cohort in a temporary folder and registers it with
:func:`registration.register_variant` exactly as ``python -m benchmark register --variant all``
does (elastix default maps; rigid, affine, then nonrigid, which starts from the saved affine
transforms; per slice: three registrations, mask warps and the residual displacement; one
pool of ``--workers`` processes shared by the three methods). Prints, per method, the wall
time per touched slice with the workers already started (ITK loaded), and the mean seconds
per slice and phase from the registration log. The load average is printed too: on a shared
machine other processes inflate the figures.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmark.phantom import PhantomConfig, synthesize
from registration import VARIANTS, register_variant
from registration.backends import BACKENDS, get_backend
from registration.stage import available_cores, read_log, worker_pool


def _ready() -> int:
    """A task that makes a worker start (its initializer loads ITK)."""
    time.sleep(0.2)
    return os.getpid()


def _start(pool: ProcessPoolExecutor | None, workers: int, backend: str) -> None:
    """Load ITK in every worker (or in this process) before anything is timed."""
    if pool is None:
        get_backend(backend)
        return
    seen: set[int] = set()
    while len(seen) < workers:
        seen.update(f.result() for f in [pool.submit(_ready) for _ in range(workers)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=4, help="phantom patients (4)")
    parser.add_argument("--size", type=int, default=512, help="slice size in pixels (512)")
    parser.add_argument("--slices", type=int, default=6, help="slices per patient (6)")
    parser.add_argument("--workers", type=int, default=available_cores(),
                        help="worker processes (default: one per core)")
    parser.add_argument("--methods", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--backend", choices=BACKENDS, default="itk-elastix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="phasebench-regspeed-") as tmp:
        root = Path(tmp) / "cohort"
        config = PhantomConfig(size=args.size, slices=args.slices)
        synthesize(root, args.patients, args.seed, config, progress=False)
        print(f"{args.patients} phantom patients, {args.size}x{args.size} px, {args.slices} "
              f"slices; {args.workers} workers on {available_cores()} cores; load average "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'method':9s} {'slices':>6s} {'wall s/slice':>12s} {'s/slice/phase':>13s} "
              f"{'failed':>6s}")
        with worker_pool(args.workers, args.backend) as pool:
            start = time.perf_counter()
            _start(pool, args.workers, args.backend)
            print(f"(workers started, ITK loaded: {time.perf_counter() - start:.1f} s)")
            for method in args.methods:
                start = time.perf_counter()
                register_variant(root, method, workers=args.workers, backend=args.backend,
                                 progress=False, pool=pool)
                wall = time.perf_counter() - start
                log = read_log(root, method)
                done = log[log["status"] != "copied"]
                slices = len(done.groupby(["patient", "slice"]))
                failed = int((done["status"] == "failed").sum())
                print(f"{method:9s} {slices:6d} {wall / slices:12.2f} "
                      f"{done['seconds'].mean():13.2f} {failed:6d}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
