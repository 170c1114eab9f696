#!/usr/bin/env bash
# Issue 33 on one lent GPU (sessions 23-): the attention backward's variants at the SR recipe's
# shapes, the GPU tests of the attention kernels, the recipe's whole step with and without the
# dQ pass, and the sdpa-safe warm start-up; one part per call, on one warm machine:
#   CALL=1: scripts/speed_probe.py attn --variants (ms at (128,8,4096,8) and (128,8,1024,16),
#           errors against float64; ~2 min): the dQ pass's levers (session 24: tiles, its
#           exponentials half on the FMA units, every key tile masked as in session 23). The
#           shipped kernel is `shipped`; `atomic` is dq_pass off (session 23's table:
#           docs/bench/speed/s23-attn-dqpass-h100.txt).
#   CALL=2: the GPU tests of both attention files (tests/gpu/test_sdpa_backends.py and
#           tests/gpu/test_triton_attention.py; ~3-4 min with the kernels' compiles).
#   CALL=3: the recipe's compiled step at batch 256 (`speed_probe.py step`), each in a fresh
#           Inductor cache (~170 s each with the cold compile): the shipped kernel (dq pass),
#           the atomic dQ (dq_pass off), and SDPA (`--kernel sdpa`: cuDNN).
#   CALL=4: the warm start-up of configs/denoise-gray.yaml (sdpa-safe): two `condiff train`
#           processes of one minute on one Inductor cache (gpu_task_budget.sh, BUDGET=3 MAXA=1;
#           carry .gpu1); the second's start-up line is the warm figure (session 22: 31-34 s
#           before the flash-op route, 17.6 with plain SDPA).
#   CALL=5: the yardsticks as a user runs them, one fresh Inductor cache: `condiff bench --recipe
#           configs/sr4-gray.yaml --only compiled` and `condiff bench --infer --sizes 1024`.
# CALL may list several parts, run in order in one call: CALL="2 1".
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu.txt"
step() {  # NAME JSON [ARGS]: the compiled step at batch 256 in a fresh Inductor cache
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout "${T_STEP:-180}" python3 scripts/speed_probe.py \
    step --modes compiled --batch 256 --repeats 5 --attn-opts "$2" "${@:3}" 2>&1 \
    | tee "$OUT/step-$1.txt"
}
for part in ${CALL:-1}; do case $part in
  1) timeout "${T_ATTN:-150}" python3 scripts/speed_probe.py attn --batch 128 \
       --json "$OUT/attn.json" \
       --variants 'shipped={}' 'atomic={"dq_pass":false}' 'mask-all={"dq_tail_mask":false}' \
       'fma={"fma_exp_dq":true}' 'q64x32={"dq":[64,32,4,2]}' 'q64x128={"dq":[64,128,4,2]}' \
       'q32x64={"dq":[32,64,4,2]}' 'q64x64s3={"dq":[64,64,4,3]}' 'q64x64w2={"dq":[64,64,2,2]}' \
       'q128x64fma={"dq":[128,64,4,2],"fma_exp_dq":true}' 'sdpa={}' 2>&1 \
       | tee "$OUT/attn.txt" ;;
  2) timeout "${T_TEST:-300}" python3 -m pytest -q -p no:cacheprovider \
       tests/gpu/test_sdpa_backends.py tests/gpu/test_triton_attention.py 2>&1 | tail -n 15 \
       | tee "$OUT/tests.txt" ;;
  3) step shipped '{}'
     step atomic '{"dq_pass":false}'
     step sdpa '{}' --kernel sdpa ;;
  4) for run in cold warm; do  # the second resumes the first's run on the now-warm cache
       echo "$run:"; CONFIG=configs/denoise-gray.yaml BUDGET=3 MAXA=1 NAME=st PART=A \
         bash scripts/gpu_task_budget.sh
     done ;;
  5) # the yardsticks as a user runs them: the recipe's step and the 1024² mean (fresh cache)
     export TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
     timeout "${T_STEP:-180}" python3 -m condiff.cli bench --recipe configs/sr4-gray.yaml \
       --repeats 5 --only compiled 2>&1 | tee "$OUT/bench-recipe.txt"
     timeout "${T_INFER:-200}" python3 -m condiff.cli bench --infer --sizes 1024 2>&1 \
       | tee "$OUT/bench-infer.txt" ;;
esac; done
ls -la "$OUT"
