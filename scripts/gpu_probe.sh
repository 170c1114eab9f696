#!/usr/bin/env bash
# Issue 24's probe on nvidia-h200-x2 (docs/NOTES.md, "Speed at work"): attention variants and the
# tiled 1024^2 mean on GPU 0, the recipe's training step (eager / compiled / graphed / regional,
# profiled; then compiled again in a new process, warm Inductor caches) on GPU 1.
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
( CUDA_VISIBLE_DEVICES=0 timeout ${T_ATTN:-250} python3 scripts/speed_probe.py attn --json $OUT/attn.json > $OUT/attn.log 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout ${T_TILES:-300} python3 scripts/speed_probe.py tiles --profile --repeats 5 \
    --tile-specs ${TILE_SPECS:-256:16:1 512:16:1 512:8:1} --json $OUT/tiles.json > $OUT/tiles.log 2>&1 ) &
( CUDA_VISIBLE_DEVICES=1 timeout ${T_STEP:-420} python3 scripts/speed_probe.py step --profile \
    --modes ${MODES:-eager compiled graphed regional} ${STEP_ARGS:-} --json $OUT/step.json > $OUT/step.log 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 120 python3 scripts/speed_probe.py step --modes compiled --repeats 3 \
    ${STEP_ARGS:-} > $OUT/step_warm.log 2>&1 ) &
wait
tail -n 80 $OUT/attn.log; tail -n 40 $OUT/tiles.log; tail -n 80 $OUT/step.log; tail -n 5 $OUT/step_warm.log
