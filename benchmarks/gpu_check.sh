#!/usr/bin/env bash
# The GPU figures of docs/performance.md and docs/scaling.md in one call (meant for one
# H100/H200-class card; about 10 minutes):
#   1. one training step (fwd+bwd) of gssd, gssd_pp, gssd_pp_no_dc, ssd and torchvision's
#      ssd300_vgg16 at batch 32, 300 px, bf16 autocast, channels-last, plus the SA / DC /
#      deformable-conv module timings (benchmarks/model_speed.py);
#   2. a short `paper`-profile training slice of gssd and gssd_pp on a synthetic cohort, with
#      the data pipeline and evaluation of the real runner: images/s, and the hours the
#      paper's 60,000 iterations at batch 32 would take at that speed.
#
#   bash benchmarks/gpu_check.sh [OUT]          # OUT defaults to gpu-check/
#
# Environment: DEVICE (cuda), ITERATIONS (300), PATIENTS (8), SLICES (16), and SPEED_ARGS /
# TRAIN_ARGS for extra options (e.g. TRAIN_ARGS="--set train.workers=4"). Everything it
# writes stays under OUT: model_speed.json, the cohort, the run folders and summary.txt.
set -euo pipefail

out=${1:-gpu-check}
device=${DEVICE:-cuda}
iterations=${ITERATIONS:-300}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."

# shellcheck disable=SC2086  # the *_ARGS variables hold several options
python benchmarks/model_speed.py --device "$device" --batch 32 --size 300 --amp bf16 \
    --channels-last --models gssd gssd_pp gssd_pp_no_dc ssd tv_ssd300 \
    --json "$out/model_speed.json" ${SPEED_ARGS:-}

python -m benchmark data synth --out "$out/cohort" --patients "${PATIENTS:-8}" \
    --slices "${SLICES:-16}" --seed 0 --workers 8 --no-progress --overwrite
for model in gssd gssd_pp; do
    # shellcheck disable=SC2086
    python -m benchmark train --cohort "$out/cohort" --model "$model" --profile paper \
        --iterations "$iterations" --set 'train.milestones=[]' --device "$device" \
        --out "$out/runs" ${TRAIN_ARGS:-}
done

python - "$out" <<'EOF' | tee "$out/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
speed = json.loads((out / "model_speed.json").read_text())
print("card:", speed["config"]["device"], "| torch", speed["config"]["torch"],
      "| torchvision", speed["config"]["torchvision"], "|", speed["config"]["date"])
for name, r in speed["models"].items():
    print(f"step  {name:14s} {r['median_ms']:8.1f} ms  {r['images_per_s']:7.1f} img/s  "
          f"x{r['ratio_to_baseline']:.2f} of gssd")
for metrics in sorted(out.glob("runs/**/metrics.json")):
    m = json.loads(metrics.read_text())
    hours = 60000 * 32 / m["images_per_second"] / 3600
    print(f"train {metrics.parent.parent.name:14s} {m['images_per_second']:7.1f} img/s over "
          f"{m['iterations']} iterations ({m['seconds']:.0f} s) -> {hours:.2f} h per paper run")
EOF
