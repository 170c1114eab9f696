#!/usr/bin/env bash
# Issue 33 on one lent GPU (session 23): the attention backward's variants at the SR recipe's
# shapes, and the recipe's step with the best of them beside the shipped kernel, each in a fresh
# Inductor cache. Three calls on one warm machine (carry .gpu1 for CALL=2):
#   CALL=1: scripts/speed_probe.py attn --variants (ms at (B,8,4096,8) and (B,8,1024,16), errors
#           against float64), the GPU tests of the attention kernels (sdpa routes, Triton, the new
#           dQ pass), then the recipe's compiled step at batch 256 with the best variant
#           (the smallest fwd+bwd summed over both shapes, errors < 8e-3), beside the shipped
#           kernel's (the baseline, same machine); each step in a fresh Inductor cache.
#   CALL=2: the warm start-up of configs/denoise-gray.yaml (sdpa-safe): two `condiff train`
#           processes of one minute on one Inductor cache (gpu_task_budget.sh, BUDGET=3 MAXA=1);
#           the second's start-up line is the warm figure.
#   CALL=3: `condiff --attention sdpa bench --recipe` (cuDNN's backward) on the same machine.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-out}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu-${CALL:-1}.txt"
step() {  # NAME JSON: the compiled step at batch 256 in a fresh Inductor cache
  TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout "${T_STEP:-110}" python3 scripts/speed_probe.py \
    step --modes compiled --batch 256 --repeats 5 --attn-opts "$2" 2>&1 | tee "$OUT/step-$1.txt"
}
case "${CALL:-1}" in
  1) timeout "${T_ATTN:-130}" python3 scripts/speed_probe.py attn --batch 128 --json /tmp/attn.json \
       --variants 'shipped={}' 'sdpa={}' 'b512={"bwd":[32,512,8,2]}' 'dqp={"dq_pass":true}' \
       'dqp-b64x128={"dq_pass":true,"bwd":[64,128,4,2]}' \
       'dqp-b64x256w8={"dq_pass":true,"bwd":[64,256,8,3]}' \
       'dqp-q64x64={"dq_pass":true,"dq":[64,64,4,2]}' \
       'dqp-q128x32={"dq_pass":true,"dq":[128,32,4,2]}' \
       'dqp-q128x128w8={"dq_pass":true,"dq":[128,128,8,2]}' 2>&1 | tee "$OUT/attn.txt"
     cp /tmp/attn.json "$OUT/"
     timeout "${T_TEST:-150}" python3 -m pytest -q -p no:cacheprovider \
       tests/gpu/test_sdpa_backends.py tests/gpu/test_triton_attention.py 2>&1 | tail -n 15 \
       | tee "$OUT/tests.txt"
     best=$(python3 - <<'EOF'
import json
rows = [r for r in json.load(open("/tmp/attn.json"))["rows"] if r["variant"] != "sdpa"]
keys = ("train L0 (128,8,4096,8)", "train L1 (128,8,1024,16)")
ok = [r for r in rows if all(k in r for k in keys) and max(r.get("errors", [1])) < 8e-3]
best = min(ok, key=lambda r: sum(r[k][1] for k in keys))
print(best["variant"], json.dumps(best["opts"]).replace(" ", ""))
EOF
)
     echo "best variant: $best" | tee -a "$OUT/attn.txt"; echo "$best" > /tmp/best.txt
     step shipped '{}'
     [ -z "$best" ] || [ "${best%% *}" = shipped ] || step best "${best#* }" ;;
  2) CONFIG=configs/denoise-gray.yaml BUDGET=3 MAXA=1 NAME=st PART=A bash scripts/gpu_task_budget.sh
     CONFIG=configs/denoise-gray.yaml BUDGET=3 MAXA=1 NAME=st PART=A bash scripts/gpu_task_budget.sh
     ;;
  3) TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) timeout "${T_STEP:-110}" python3 -m condiff.cli \
       --attention sdpa bench --recipe configs/sr4-gray.yaml --repeats 5 --only compiled 2>&1 \
       | tee "$OUT/recipe-sdpa.txt" ;;
esac
ls -la "$OUT"
