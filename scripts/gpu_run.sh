#!/usr/bin/env bash
# What one device-tool call runs on a GPU machine (its torch, here 2.11), chosen by PART:
# tests | attn (Triton kernel check + timing) | bench | train (compiled `condiff train`, SDPA vs
# Triton) | demo. Writes logs and JSON under $OUT. Example: PART=tests bash scripts/gpu_run.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
case "${PART:-bench}" in
  # Order for a session with device time: tests, attn, bench, train (docs/NOTES.md says why).
  tests) timeout ${T:-400} python3 -m pytest -q -p no:cacheprovider -p no:logging --tb=short tests/gpu \
           2>&1 | grep -v DEBUG | tee "$OUT/gpu_tests.log" ;;
  attn)  python3 scripts/attention_bench.py ${SWEEP---quick} --json "$OUT/attn.json" 2>&1 | tee "$OUT/attn.log" ;;
  bench) python3 -m condiff.cli bench --presets ${PRESETS:-seed-default} --repeats ${REPEATS:-3} \
           --batch 64 --sample-batch 16 --no-diffusers --profile ${ONLY:+--only $ONLY} --train-loop ${LOOP:-50} \
           --json "$OUT/bench_${PRESETS:-seed-default}.json" 2>&1 | grep -v DEBUG | tee "$OUT/bench.log" ;;
  train) for attn in ${ATTNS:-sdpa triton}; do  # compiled `condiff train`, steady img/s
           python3 -m condiff.cli train --config configs/demo-gpu.yaml --no-progress \
             train.output_dir=/tmp/train-$attn train.steps=${STEPS:-300} train.log_every=50 \
             train.val_every=100000 train.attention=$attn 2>&1 | grep -v DEBUG | tee -a "$OUT/train.log"
         done ;;
  demo)  python3 -m condiff.cli demo --output /tmp/demo-gpu --steps ${STEPS:-3000} --no-progress \
           2>&1 | tee "$OUT/demo.log"
         python3 -m condiff.cli evaluate --checkpoint /tmp/demo-gpu --sweep --max-side 512 \
           --output /tmp/demo-gpu/sweep --no-progress 2>&1 | tee "$OUT/sweep.log"
         cp /tmp/demo-gpu/sweep/summary.csv "$OUT/" ; cp /tmp/demo-gpu/sweep/quality_vs_steps.png "$OUT/"
         cp /tmp/demo-gpu/report/grids/camera.png "$OUT/grid_camera.png" 2>/dev/null ;;
esac
