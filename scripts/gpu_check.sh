#!/usr/bin/env bash
# Issue 10's GPU check, one prepared script for a lent GPU: is the Table 2 grid ten times cheaper?
#   1. python -m sdexp.speedcheck single: parity of eager and graphed steps (30 steps, b = 0.5,
#      both recipes); one run's training img/s at b = 1, 0.5, 0.3, eager against graphed, fp32
#      and bf16 (ResNet110 and ResNet56); waits for the device per step; Lightning's share;
#      a validation pass;
#   2. the launcher preset as a user runs it: two short graphed runs at once through
#      train.py hydra/launcher=gpu_shared (results.json of each, their CPU slots);
#   3. python -m sdexp.speedcheck concurrent: aggregate img/s of K = 1, 8, 4, 2 graphed runs at
#      once, without MPS, then with it (scripts/mps.sh start/stop);
#   4. python -m sdexp.speedcheck report: tables, targets and the presets' cost in GPU-hours.
# Every step is bounded (a timeout, and a deadline after which the Python parts start nothing
# new and list what they skipped): about 7 minutes in all on an H200, at most 8; BUDGET_S
# (default 450 s) is the time for steps 1-3. One part alone, e.g. the concurrent runs again:
#   python -m sdexp.speedcheck concurrent --graphs --label plain --out OUT --data WORK/data
# Output in OUT (default outputs/gpu_check): single.json, concurrent_plain.json,
# concurrent_mps.json, speedcheck.json, speedcheck.md, gpu_check.log (tee it); data and scratch
# files in WORK (default /tmp/sdexp_gpu_check). Commit OUT's files under docs/performance/.
#
# On a lent machine (device tool; its image has torch and Lightning but not Hydra): once, here,
#   scripts/gpu_wheels.sh                  # hydra-core, omegaconf, antlr4, joblib launcher -> .whl/
# then this command (one line), with carry [".whl"] and timeout_s 560:
#   mkdir -p $OUT/gc && python3 -m pip install -q --no-index --no-deps --no-compile
#   --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#   || exit; set -o pipefail; PYTHON=python3 scripts/gpu_check.sh $OUT/gc 2>&1
#   | tee $OUT/gc/gpu_check.log
# A CPU dry run of every step, with emulated graphs and tiny sizes:
#   QUICK=1 scripts/gpu_check.sh /tmp/gpu_check_dry
set -uo pipefail
out=${1:-outputs/gpu_check}
work=${WORK:-/tmp/sdexp_gpu_check}
python=${PYTHON:-python}
budget=${BUDGET_S:-450}
quick=()
jobs=(1 8 4 2)
steps=30 val=5000
if [ "${QUICK:-0}" = 1 ]; then
  quick=(--quick)
  jobs=(1 2)
  steps=3 val=16
  budget=${BUDGET_S:-900}
fi
mkdir -p "$out" "$work"
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$root PYTHONUNBUFFERED=1 WANDB_MODE=offline
export CUDA_MPS_PIPE_DIRECTORY=${CUDA_MPS_PIPE_DIRECTORY:-/tmp/nvidia-mps}
export CUDA_MPS_LOG_DIRECTORY=${CUDA_MPS_LOG_DIRECTORY:-/tmp/nvidia-log}
left() { echo $((budget - SECONDS)); }
common=(--out "$out" --data "$work/data" "${quick[@]}")

echo "== machine (${SECONDS}s)"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv \
  2>/dev/null || echo "no nvidia-smi"
nproc
$python -c "import torch, pytorch_lightning as pl, hydra, omegaconf
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__,
      'hydra', hydra.__version__, 'omegaconf', omegaconf.__version__)" || exit 1

echo "== 1. one run: parity, throughput, waits, Lightning's share (${SECONDS}s)"
timeout $(($(left) - 120)) $python -m sdexp.speedcheck single "${common[@]}" \
  --deadline-s $(($(left) - 250)) || echo "single: exit status $?"

echo "== 2. hydra/launcher=gpu_shared: two graphed runs at once through train.py (${SECONDS}s)"
graphs="speed.cuda_graphs=true speed.fused_optimizer=true"
if [ "${QUICK:-0}" = 1 ]; then graphs="model.depth=8 dataset.batch_size=8"; fi
rm -rf "$work/sweep"
if [ "$(left)" -lt 130 ]; then echo "skipped: too little time left"; else
# shellcheck disable=SC2086
timeout 100 $python train.py -m seed=0,1 budget=0.5 mode=uniform logger=csv \
  dataset.data_dir="$work/data" dataset.download=false dataset.verify_md5=false \
  dataset.val_size=$val trainer.max_epochs=1 trainer.limit_train_batches=$((steps + 20)) \
  trainer.enable_progress_bar=false hydra/launcher=gpu_shared hydra.launcher.n_jobs=2 \
  hydra.sweep.dir="$work/sweep" $graphs >"$work/sweep.log" 2>&1 || {
  echo "launcher run: exit status $?"
  tail -25 "$work/sweep.log"
}
for run in "$work"/sweep/*/; do
  [ -d "$run" ] || continue
  status=$($python -c "import json,sys; r=json.load(open(sys.argv[1])); print(r['status'], r.get('reason') or '', 'test', r.get('test'))" \
    "$run/results.json" 2>/dev/null || echo "no results.json")
  echo "  $(basename "$run"): $status; $(grep -ho 'slot [0-9]* of [0-9]*, CPUs \[[^]]*\], [0-9]* torch threads' "$run"/*.log | head -1)"
done
fi

echo "== 3. several runs at once, without MPS (${SECONDS}s)"
hard=$(($(left) - 40 > 20 ? $(left) - 40 : 20))
timeout $hard $python -m sdexp.speedcheck concurrent "${common[@]}" \
  --graphs --label plain --jobs "${jobs[@]}" --timeout-s 120 --deadline-s $((($(left) - 40) / 2)) ||
  echo "concurrent (plain): exit status $?"

echo "== 3b. with the MPS daemon (${SECONDS}s)"
if scripts/mps.sh start; then
  hard=$(($(left) + 30 > 20 ? $(left) + 30 : 20))
  timeout $hard $python -m sdexp.speedcheck concurrent "${common[@]}" \
    --graphs --label mps --jobs "${jobs[@]}" --timeout-s 120 --deadline-s $(($(left) - 40)) ||
    echo "concurrent (mps): exit status $?"
  scripts/mps.sh stop
else
  echo "MPS not started: the runs above are all there is"
fi

echo "== 4. report (${SECONDS}s)"
$python -m sdexp.speedcheck report --out "$out" || echo "report: exit status $?"
echo "== done in ${SECONDS}s"
