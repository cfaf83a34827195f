#!/usr/bin/env bash
# GPU check, one prepared script for a GPU box (or a lent GPU):
#   1. python -m sdexp.bench on the GPU (step-time ratios, input pipeline, sensitivities);
#   2. two-epoch runs of the canonical setup (Stable ResNet110, CIFAR-10 shape, batch 128,
#      45,000 training images) on synthetic data in CIFAR's real on-disk format, at budgets 1.0
#      and 0.5 (uniform), fp32; with FAST=1 also with the fast path (bf16 autocast +
#      channels_last), with COMPILE=1 also the fast path with compiled residual branches at 0.5;
#   3. a table of training images per second (the second epoch, validation excluded).
# Usage: scripts/gpu_check.sh [OUT]   (default outputs/gpu_check; about 3 minutes on an H200)
# A CPU dry run of the same steps:
#   IMAGES=300 VAL=50 BENCH="--quick" RUN="model.depth=14" scripts/gpu_check.sh /tmp/gpu_check
set -euo pipefail
out=${1:-outputs/gpu_check}
python=${PYTHON:-python}
images=${IMAGES:-50000}
val=${VAL:-5000}
mkdir -p "$out"
export WANDB_MODE=offline

echo "== benchmark"
# shellcheck disable=SC2086
$python -m sdexp.bench --out "$out/bench" --repeats 20 --images "$images" --workers 8 ${BENCH:-}

echo "== two-epoch runs on synthetic CIFAR-10 (${SECONDS}s)"
$python -c "from sdexp.data import write_synthetic_cifar as w; w('$out/data', 'cifar10', $images, 10000)"
run() {  # run NAME OVERRIDES...
  local name=$1
  shift
  # shellcheck disable=SC2086
  $python train.py mode=uniform dataset.data_dir="$out/data" dataset.download=false \
    dataset.verify_md5=false dataset.val_size="$val" trainer.max_epochs=2 trainer.enable_progress_bar=false \
    trainer.enable_model_summary=false logger=csv hydra.run.dir="$out/runs/$name" ${RUN:-} "$@" \
    >"$out/$name.log" 2>&1 || { echo "$name failed:"; tail -20 "$out/$name.log"; }
}
fast="trainer.precision=bf16-mixed speed.channels_last=true"
for budget in 1.0 0.5; do
  run "fp32-b$budget" budget=$budget
  # shellcheck disable=SC2086
  if [ "${FAST:-0}" = 1 ]; then run "fast-b$budget" budget=$budget $fast; fi
done
if [ "${COMPILE:-0}" = 1 ]; then
  # shellcheck disable=SC2086
  run "fast-compiled-b0.5" budget=0.5 $fast speed.compile_blocks=true
fi

echo "== training throughput (${SECONDS}s)"
$python - "$out" "$((images - val))" <<'PY'
import json, sys
from pathlib import Path

import torch

out, images = Path(sys.argv[1]), int(sys.argv[2])
print(f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
print(f"{'run':<22} {'epoch 1 (s)':>12} {'epoch 2 (s)':>12} {'images/s':>10} {'test error':>11}")
for path in sorted((out / "runs").glob("*/results.json")):
    r = json.loads(path.read_text())
    times = r.get("epoch_times_s") or [float("nan")]
    print(f"{path.parent.name:<22} {times[0]:>12.2f} {times[-1]:>12.2f} "
          f"{images / times[-1]:>10.0f} {r.get('test_error', float('nan')):>11.2f}")
PY
echo "== done in ${SECONDS}s"
