"""Seconds per slice of the registration stage (three moving phases onto portal), per method.

Usage: ``python benchmarks/registration_speed.py [--size 512] [--slices 3] [--threads N]``

Times :func:`registration.stage.register_patient` on a synthetic phantom patient (elastix
default maps; per slice: three registrations, mask warps and, as for every synthetic cohort,
the residual displacement), and prints mean / min / max seconds per slice. The load average is
printed too: on a shared machine other processes inflate the figures.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmark.phantom import PhantomConfig, make_patient
from registration.backends import BACKENDS, get_backend, set_threads
from registration.stage import VARIANTS, available_cores, register_patient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="slice size in pixels (512)")
    parser.add_argument("--slices", type=int, default=3, help="slices timed per method (>= 3)")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="ITK threads (default: all cores of this machine)")
    parser.add_argument("--methods", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--backend", choices=BACKENDS, default="itk-elastix")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    set_threads(args.threads, args.backend)
    start = time.perf_counter()
    backend = get_backend(args.backend)
    print(f"backend {args.backend}: loaded in {time.perf_counter() - start:.1f} s; "
          f"{args.threads} ITK threads; load average {os.getloadavg()[0]:.1f}")
    patient = make_patient(0, args.seed, PhantomConfig(size=args.size, slices=args.slices))
    patient.lesion[:, 0, 0] = 1  # the stage then registers every slice
    print(f"phantom {args.size}x{args.size}, pixel {patient.spacing[1]:.3f} mm, "
          f"{args.slices} slices x 3 moving phases")
    print(f"{'method':9s} {'s/slice':>8s} {'min':>7s} {'max':>7s} {'failed':>6s}")
    for method in args.methods:
        _, rows, _ = register_patient(patient, method, backend)
        done = [r for r in rows if r["status"] != "copied"]
        per_slice: dict[int, float] = {}
        for row in done:
            per_slice[row["slice"]] = per_slice.get(row["slice"], 0.0) + row["seconds"]
        values = np.array(list(per_slice.values()))
        failed = sum(r["status"] == "failed" for r in done)
        print(f"{method:9s} {values.mean():8.2f} {values.min():7.2f} {values.max():7.2f} "
              f"{failed:6d}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.1f} ({available_cores()} cores)")


if __name__ == "__main__":
    main()
