#!/usr/bin/env bash
# Issue 24's two benchmarks on one lent H200 (docs/NOTES.md, "Speed at work"): whole images
# through the pipeline (mean and 20-step sample per size), then the SR recipe's training step
# (eager vs compiled variants). Set ONLY to pick recipe modes, SIZES for the image sizes, and
# INFER_ARGS= (empty) to time the compiled pipeline (default: --no-compile).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu.txt"
timeout ${T_INFER:-150} python3 -m condiff.cli bench --infer --sizes ${SIZES:-256 512 1024} \
  --repeats 3 ${INFER_ARGS---no-compile} --json "$OUT/infer.json" 2>&1 | tee "$OUT/infer.log"
timeout ${T_RECIPE:-200} python3 -m condiff.cli bench --recipe configs/sr4-gray.yaml \
  --repeats 5 --only ${ONLY:-eager compiled} --json "$OUT/recipe.json" 2>&1 | tee "$OUT/recipe.log"
