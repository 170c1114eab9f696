#!/usr/bin/env bash
# The super-resolution recipe study on a lent GPU machine (docs/NOTES.md, "Recipe study").
# DATA: the SR data folder (train/bsd400, test/{Set5,Set14,BSD100}), carried as .srdata.
#   PART=pair RA="NAME override ..." RB="NAME override ...": two recipes side by side, one per GPU
#   PART=ddp  RA="NAME override ..." [GPUS=2]: one recipe on all GPUs under torchrun
# Each recipe: scripts/sr_study.py (train with `condiff train`, score every checkpoint with
# `condiff evaluate --protocol sr`). Logs, result JSON and metrics.jsonl land in $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-out}; DATA=${DATA:-.srdata}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/gpu.txt"
study() {
  python3 scripts/sr_study.py --config "${CONFIG:-configs/sr4-gray.yaml}" --data "$DATA" \
    --out /tmp/study "$@"
}
keep() { cp "/tmp/study/$1/metrics.jsonl" "$OUT/$1.jsonl" 2>/dev/null; }
report() {  # the last checkpoint's report, plot and two grids (bicubic | mean | sample | target)
  local d; d=$(ls -d /tmp/study/$1/eval/*-both 2>/dev/null | tail -n 1); [ -n "$d" ] || return
  cp "$d/report.md" "$OUT/$1-report.md"; cp "$d/sr_psnr.png" "$OUT/$1-sr_psnr.png"
  cp "$d/grids/Set5/butterfly.png" "$OUT/$1-butterfly.png"
  cp "$d/grids/Set14/zebra.png" "$OUT/$1-zebra.png"
}
case "${PART:-pair}" in
  pair) read -r -a A <<< "$RA"; read -r -a B <<< "$RB"
        CUDA_VISIBLE_DEVICES=0 study --name "${A[@]}" > "$OUT/${A[0]}.log" 2>&1 &
        CUDA_VISIBLE_DEVICES=1 study --name "${B[@]}" > "$OUT/${B[0]}.log" 2>&1 &
        wait; keep "${A[0]}"; keep "${B[0]}" ;;
  ddp)  read -r -a A <<< "$RA"
        study --gpus "${GPUS:-2}" --name "${A[@]}" > "$OUT/${A[0]}.log" 2>&1
        keep "${A[0]}"; report "${A[0]}" ;;
esac
grep -h "^\[\|img/s per log\|Error\|error" "$OUT"/*.log | tail -n 40
