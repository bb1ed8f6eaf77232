"""Project the training part of ``run`` (every Table I model x 2 variants) for a profile.

    python benchmarks/main_job_budget.py --profile quick
    python benchmarks/main_job_budget.py --profile quick --set detector.input_size=128 --models gssd,ssd

Per model: CPU seconds of one training step (SGD step on random 12-channel images with random
boxes and masks, at the profile's input size, width and batch, on ``train.threads`` threads)
and of one evaluation image, measured with ``time.process_time`` so that other jobs on a shared
machine inflate the numbers little. The projection for one unit is
``iterations x step + (validations x val images + val + test images) x eval image``; ``run``
trains two units per model (the variant and unregistered) one after another on CPU. Split sizes
come from ``--val-images`` / ``--test-images`` (the lesion slices of the cohort). Registration
and cohort synthesis are not included (see ``benchmarks/registration_speed.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from benchmark.config import resolve  # noqa: E402
from benchmark.runner import parse_models  # noqa: E402


def random_batch(batch: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, list[dict]]:
    """Images in [0, 1] and one to two boxes (with their masks) per image."""
    images = torch.rand(batch, 12, size, size, generator=gen)
    targets = []
    for _ in range(batch):
        xy = torch.rand(2, 2, generator=gen) * size * 0.6
        wh = (0.1 + torch.rand(2, 2, generator=gen) * 0.3) * size
        boxes = torch.cat([xy, xy + wh], 1).clamp(0, size)
        mask = torch.zeros(size, size, dtype=torch.uint8)
        for x0, y0, x1, y1 in boxes.int().tolist():
            mask[y0:y1, x0:x1] = 1
        targets.append({"boxes": boxes, "labels": torch.ones(2, dtype=torch.long), "masks": mask})
    return images, targets


def cpu_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def measure(name: str, config: dict, steps: int) -> tuple[float, float]:
    """CPU seconds per training step and per evaluation image."""
    det, tc = config["detector"], config["train"]
    size = det["input_size"]
    net = models.build(name, input_size=size, width=det["width"], **det.get("overrides", {}))
    net.train()
    optimizer = torch.optim.SGD(net.parameters(), lr=tc["lr"], momentum=tc["momentum"])
    gen = torch.Generator().manual_seed(0)
    images, raw = random_batch(tc["batch_size"], size, gen)
    targets = net.prepare_targets(raw)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(net(images, targets).values()).backward()
        optimizer.step()

    train = cpu_seconds(step, steps)
    net.eval()
    batch = torch.rand(config["eval"]["batch_size"], 12, size, size, generator=gen)
    with torch.no_grad():
        evaluate = cpu_seconds(lambda: net(batch), 2) / len(batch)
    return train, evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--models", default="all", help="all (Table I) or a comma list")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per model")
    parser.add_argument("--val-images", type=int, default=15, metavar="N")
    parser.add_argument("--test-images", type=int, default=35, metavar="N")
    args = parser.parse_args()
    config = resolve(args.profile, args.sets)
    torch.set_num_threads(int(config["train"].get("threads") or torch.get_num_threads()))
    names = parse_models(args.models)
    tc = config["train"]
    validations = tc["iterations"] // tc["val_every"]
    total = 0.0
    det = config["detector"]
    print(
        f"profile {args.profile}: input {det['input_size']}, width {det['width']}, batch "
        f"{tc['batch_size']}, {tc['iterations']} iterations, validation every {tc['val_every']}; "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    print(f"{'model':22s} {'s/step':>7s} {'ms/eval img':>11s} {'s/unit':>7s}")
    for name in names:
        train, evaluate = measure(name, config, args.steps)
        images = validations * args.val_images + args.val_images + args.test_images
        unit = tc["iterations"] * train + images * evaluate
        total += 2 * unit
        print(f"{name:22s} {train:7.3f} {1000 * evaluate:11.1f} {unit:7.0f}")
    print(f"projected training of the matrix ({2 * len(names)} units): {total / 60:.1f} CPU min")


if __name__ == "__main__":
    main()
