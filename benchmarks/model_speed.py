"""Forward+backward time per model and per module (SA, DC, deformable conv vs torchvision).

    python benchmarks/model_speed.py --device cuda --batch 32 --size 300 --amp bf16
    python benchmarks/model_speed.py --device cpu --batch 2 --size 160 --width 0.25 --threads 1

Models: one training step (loss forward + backward, no optimizer) on random images and boxes.
``--models`` also takes ``tv_ssd300``: torchvision's ``ssd300_vgg16`` (full width whatever ``--width``; no weights, 2
classes, first conv widened to the 12 input channels), the reference the runner's throughput
target refers to, timed the same way.
Modules: at the conv4_3 scale of the chosen model config (C channels, S x S map): the SA
module, the whole DC module, our modulated deformable conv and torchvision's
``deform_conv2d`` on the same inputs (random offsets of a few pixels, random masks), and the
plain grouped conv of the same shape. Every timing is the median over ``--steps`` runs after
``--warmup`` runs, with the device synchronised; ``--json FILE`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from benchmark.atomic import write_json  # noqa: E402
from models.attention import SelfAttention  # noqa: E402
from models.deform import DCModule, modulated_deform_conv2d  # noqa: E402


def timed(fn: Callable[[], None], device: torch.device, steps: int, warmup: int) -> dict:
    """Median / min ms of ``fn`` over ``steps`` runs after ``warmup`` runs."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times)}


def random_targets(batch: int, size: int, gen: torch.Generator) -> list[dict]:
    targets = []
    for _ in range(batch):
        xy = torch.rand(2, 2, generator=gen) * size * 0.6
        wh = (0.1 + torch.rand(2, 2, generator=gen) * 0.3) * size
        boxes = torch.cat([xy, xy + wh], 1).clamp(0, size)
        targets.append({"boxes": boxes, "labels": torch.ones(2, dtype=torch.long)})
    return targets


REFERENCE = "tv_ssd300"


def torchvision_ssd300(size: int) -> torch.nn.Module:
    """torchvision's SSD300-VGG16 for 12-channel input and one lesion class, untrained."""
    from torchvision.models.detection import ssd300_vgg16

    net = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=2)
    first = net.backbone.features[0]
    net.backbone.features[0] = torch.nn.Conv2d(12, first.out_channels, 3, padding=1)
    net.transform.fixed_size = (size, size)
    net.transform.image_mean, net.transform.image_std = [0.0] * 12, [1.0] * 12
    return net


def model_step(name: str, args: argparse.Namespace, device: torch.device, amp) -> dict:
    if name == REFERENCE:
        net = torchvision_ssd300(args.size)
    else:
        net = models.build(name, input_size=args.size, width=args.width)
    net = net.to(device).train()
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(args.batch, 12, args.size, args.size, generator=gen).to(device)
    if args.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = random_targets(args.batch, args.size, gen)
    if name == REFERENCE:
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        inputs: object = list(images)
    else:
        targets, inputs = net.prepare_targets(targets), images

    def step() -> None:
        net.zero_grad(set_to_none=True)
        with amp():
            losses = net(inputs, targets)
        sum(losses.values()).backward()

    result = timed(step, device, args.steps, args.warmup)
    result["params"] = sum(p.numel() for p in net.parameters())
    result["images_per_s"] = args.batch / result["median_ms"] * 1e3
    return result


def module_steps(args: argparse.Namespace, device: torch.device, amp) -> dict[str, dict]:
    """Timings of the GSSD++ modules at the conv4_3 scale of the configured model."""
    ref = models.build("gssd_pp", input_size=args.size, width=args.width)
    c, s = ref.source_channels[0], ref.feature_sizes[0]
    b, og, k = args.batch, 4, 9
    gate_c = ref.dc.attention_channels  # the gated SA map the DC module reads (C)
    cin = c + gate_c
    gen = torch.Generator().manual_seed(0)

    def rand(*shape, grad=True):
        t = torch.randn(*shape, generator=gen).to(device)
        return t.requires_grad_(grad)

    x, gate = rand(b, c, s, s), rand(b, gate_c, s, s)
    inp = rand(b, cin, s, s)
    offset = (2 * torch.randn(b, 2 * og * k, s, s, generator=gen)).to(device).requires_grad_()
    mask = torch.rand(b, og * k, s, s, generator=gen).to(device).requires_grad_()
    weight = rand(c, cin // og, 3, 3)
    sa = SelfAttention(c).to(device).train()
    dc = DCModule(c, gate_c).to(device).train()
    with torch.no_grad():
        sa.sigma.fill_(0.5)

    def run(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            with amp():
                out = fn()
            out.float().square().mean().backward()

        return step

    tv = torchvision.ops.deform_conv2d
    cases = {
        f"SA C={c} N={s}x{s}": run(lambda: sa(x)),
        f"DC module {cin}->{c} (ours, incl. offset predictor)": run(lambda: dc(x, gate)),
        f"deform conv {cin}->{c} g4 og4 (ours)": run(
            lambda: modulated_deform_conv2d(inp, offset, weight, None, 1, 1, 1, mask)
        ),
        f"deform conv {cin}->{c} g4 og4 (torchvision, fp32)": run(
            lambda: tv(inp.float(), offset.float(), weight.float(), None, 1, 1, 1, mask.float())
        ),
        f"plain conv {cin}->{c} g4": run(lambda: F.conv2d(inp, weight, None, 1, 1, 1, og)),
    }
    return {name: timed(fn, device, args.steps, args.warmup) for name, fn in cases.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=300, help="input size (px)")
    parser.add_argument("--width", type=float, default=1.0, help="channel multiplier")
    parser.add_argument("--models", nargs="*", default=["gssd", "ssd", "gssd_pp"])
    parser.add_argument("--baseline", default="gssd", help="model the ratios refer to")
    parser.add_argument("--amp", choices=["none", "bf16"], default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (CPU)")
    parser.add_argument("--no-modules", action="store_true", help="skip the per-module timings")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    def amp():
        if args.amp == "none":
            return nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    info = {
        "device": card or platform.machine(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        **{k: getattr(args, k) for k in ("batch", "size", "width", "amp", "channels_last")},
    }
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    results: dict = {"config": info, "models": {}, "modules": {}}
    for name in args.models:
        r = model_step(name, args, device, amp)
        results["models"][name] = r
        base = results["models"].get(args.baseline, r)["median_ms"]
        r["ratio_to_baseline"] = r["median_ms"] / base
        print(
            f"model  {name:28s} {r['median_ms']:9.1f} ms  (min {r['min_ms']:.1f}, "
            f"x{r['ratio_to_baseline']:.2f} of {args.baseline}, {r['images_per_s']:.1f} img/s, "
            f"{r['params'] / 1e6:.2f}M params)"
        )
    if not args.no_modules:
        for name, r in module_steps(args, device, amp).items():
            results["modules"][name] = r
            print(f"module {name:52s} {r['median_ms']:9.2f} ms  (min {r['min_ms']:.2f})")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
