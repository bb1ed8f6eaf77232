"""Seconds to evaluate 10^5 detections (six APs + FROC) and to bootstrap them, per layout.

Usage: ``python benchmarks/eval_speed.py [--detections 100000] [--gt-per-image 2]
[--patients 10] [--bootstrap 1000] [--repeat 3]``

Builds random splits of the same number of detections spread three ways (5000 images x 20,
100 x 1000, 10 x 10 000 detections), with ``--gt-per-image`` ground-truth boxes per image and
half of the detections placed near a ground truth so that matches happen, and times on one
core (the best of ``--repeat``):

* ``build``: flattening and sorting the split (:class:`benchmark.evaluation.Evaluator`);
* ``evaluate``: the six APs (IoU and IoBB at 0.3, 0.5, 0.7) and the FROC, as a run does;
* ``bootstrap``: ``--bootstrap`` patient resamples of all six APs (images spread evenly over
  ``--patients`` patients).

Pin to one core with ``taskset -c 0`` and keep BLAS to one thread (``OMP_NUM_THREADS=1``) for
the one-core figures; the load average is printed, other processes inflate the numbers.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from benchmark.evaluation import METRIC_KEYS, Evaluator, patient_draws

LAYOUTS = ((5000, 20), (100, 1000), (10, 10_000))


def split(images: int, per_image: int, gt_per_image: int, patients: int, seed: int):
    """Random ground truth and detections of one split, as the Evaluator takes them."""
    rng = np.random.default_rng(seed)
    gts, dets, scores = [], [], []
    for _ in range(images):
        corner = rng.uniform(0, 460, (gt_per_image, 2))
        gt = np.hstack([corner, corner + rng.uniform(10, 50, (gt_per_image, 2))])
        near = gt[rng.integers(0, gt_per_image, per_image // 2)] + rng.normal(
            0, 4, (per_image // 2, 4)
        )
        corner = rng.uniform(0, 460, (per_image - per_image // 2, 2))
        far = np.hstack([corner, corner + rng.uniform(10, 50, corner.shape)])
        gts.append(gt)
        dets.append(np.vstack([near, far]))
        scores.append(rng.uniform(0, 1, per_image))
    groups = [f"p{i * patients // images}" for i in range(images)]
    return gts, dets, scores, groups


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--detections", type=int, default=100_000, help="per split (100000)")
    parser.add_argument("--gt-per-image", type=int, default=2, help="ground truths per image (2)")
    parser.add_argument("--patients", type=int, default=10, help="patients per split (10)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="resamples (1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats, best kept (3)")
    args = parser.parse_args()

    print(f"load average {os.getloadavg()[0]:.1f}; {args.detections} detections, "
          f"{args.gt_per_image} ground truths per image, {args.patients} patients")  # fmt: skip
    print(f"{'layout':>16} {'build s':>8} {'evaluate s':>11} {'bootstrap s':>12}  "
          f"{'TP at IoU50':>11}")  # fmt: skip
    for images, _ in LAYOUTS:
        per_image = args.detections // images
        data = split(images, per_image, args.gt_per_image, min(args.patients, images), 0)
        build = best_of(args.repeat, lambda data=data: Evaluator(*data))
        evaluate = best_of(args.repeat, lambda data=data: Evaluator(*data).metrics())
        ev = Evaluator(*data)
        ev.metrics()  # match once, so that the bootstrap figure is the resampling alone
        draws = patient_draws(len(ev.group_names), args.bootstrap, 0)
        boot = best_of(args.repeat, lambda ev=ev, draws=draws: ev.replicates(METRIC_KEYS, draws))
        tps = int(ev.match("IoU", 0.5).sum())
        print(f"{images:>6} x {per_image:<7} {build:8.3f} {evaluate:11.3f} {boot:12.3f}  "
              f"{tps:>11}")  # fmt: skip


if __name__ == "__main__":
    main()
