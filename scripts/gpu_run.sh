#!/usr/bin/env bash
# What one device-tool call runs on a GPU machine (its torch, here 2.11): GPU tests, then
# `condiff bench`, then (PART=train) the GPU demo. Writes logs and JSON under $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
case "${PART:-bench}" in
  tests) python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT/gpu_tests.log" ;;
  bench) python3 -m condiff.cli bench --presets ${PRESETS:-seed-default} --repeats ${REPEATS:-5} \
           --json "$OUT/bench_${PRESETS:-seed-default}.json" 2>&1 | tee "$OUT/bench.log" ;;
  train) python3 -m condiff.cli demo --output /tmp/demo-gpu --steps ${STEPS:-3000} --no-progress \
           2>&1 | tee "$OUT/demo.log"
         python3 -m condiff.cli evaluate --checkpoint /tmp/demo-gpu --sweep --max-side 512 \
           --output /tmp/demo-gpu/sweep --no-progress 2>&1 | tee "$OUT/sweep.log"
         cp /tmp/demo-gpu/sweep/summary.csv "$OUT/" ; cp /tmp/demo-gpu/sweep/quality_vs_steps.png "$OUT/"
         cp /tmp/demo-gpu/report/grids/camera.png "$OUT/grid_camera.png" 2>/dev/null ;;
esac
