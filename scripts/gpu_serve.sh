#!/usr/bin/env bash
# `condiff serve` load test on a GPU with seed-default (docs/NOTES.md, "condiff serve").
# RUN: a seed-default gray 4x run folder; without one, a one-step run of configs/sr4-gray.yaml is
# made on DATA (latency and throughput do not depend on the weights; the load test's equality
# check compares the server with `condiff sample` of the same weights).
# Then `condiff bench --serve`: REQUESTS uploads from CLIENTS clients, 64 px low-resolution
# photographs with upscale 4 (256 px out), batching on and off; SPEED="--no-compile" (default)
# runs servers and `condiff sample` uncompiled (bf16, CUDA graphs).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-out}; DATA=${DATA:-.srdata}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu.txt"
RUN=${RUN:-}
if [ -z "$RUN" ]; then
  RUN=/tmp/serve-run
  python3 -m condiff.cli train --config configs/sr4-gray.yaml --no-progress \
    data.root="$DATA/train/bsd400" train.output_dir=$RUN train.steps=1 train.compile=false \
    train.warmup_steps=0 train.val_every=1 train.image_every=1 > "$OUT/train.log" 2>&1 || exit
fi
t0=$(date +%s)
python3 -m condiff.cli bench --serve --checkpoint "$RUN" --upscale 4 ${SPEED---no-compile} \
  --requests "${REQUESTS:-200}" --clients "${CLIENTS:-16}" 2>&1 | tee "$OUT/serve.log"
echo "load test: $(( $(date +%s) - t0 )) s" | tee -a "$OUT/serve.log"
