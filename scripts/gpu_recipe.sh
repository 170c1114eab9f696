#!/usr/bin/env bash
# Issue 24: the SR recipe (configs/sr4-gray.yaml) on nvidia-h200-x2 under torchrun, timed from
# launch to the last checkpoint, then scored (docs/NOTES.md, "Speed at work").
# Carry .srdata (train/bsd400, test/{Set5,Set14,BSD100}: the shared SR data).
#   WARM=1: a 30-step run first (its first step is the cold compile; it fills the cache)
#   ARGS:   overrides for the recipe run (default train.compile=true)
# Then GPU 0 scores Set5/Set14/BSD100 (posterior mean, tiles with overlap 16) and runs EXTRA0
# (a bash command line); GPU 1 scores Set5/Set14 with overlap 8 if OV8=1 and runs EXTRA1.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export CONDIFF_CACHE=${CONDIFF_CACHE:-/tmp/condiff-cache}
OUT=${OUT:-out}; DATA=${DATA:-.srdata}; mkdir -p "$OUT"
nvidia-smi -L
train() {  # name, overrides...
  local name=$1; shift
  local t0=$EPOCHREALTIME
  python3 -m torch.distributed.run --nproc-per-node 2 -m condiff.cli train \
    --config configs/sr4-gray.yaml --no-progress data.root=$DATA/train/bsd400 \
    train.output_dir=/tmp/runs/$name "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local last; last=$(ls -d /tmp/runs/$name/checkpoints/step_* 2>/dev/null | tail -n 1)
  python3 - "$name" "$rc" "$t0" "$EPOCHREALTIME" "$last" <<'PY' | tee -a "$OUT/times.txt"
import os, sys
name, rc, t0, t1, last = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
ck = max((os.path.getmtime(os.path.join(last, f)) for f in os.listdir(last)), default=t0) if last else t0
print(f"{name}: rc {rc}, launch to last checkpoint {ck - t0:.1f} s, launch to exit {t1 - t0:.1f} s ({last})")
PY
  grep -E "img/s|step +[0-9]+/|checkpoint|Error" "$OUT/$name.log" | tail -n 12
}
if [ "${WARM:-1}" = 1 ]; then
  train warm train.compile=true train.steps=30 train.log_every=10 train.ckpt_every=30 \
    train.val_every=30 train.image_every=30
fi
train recipe ${ARGS:-train.compile=true}
ls -la /tmp/runs/recipe/checkpoints | tail -n 3
score() {  # gpu, tag, overlap, sets...
  local gpu=$1 tag=$2 ov=$3; shift 3
  local sets=(); for s in "$@"; do sets+=("$DATA/test/$s"); done
  CUDA_VISIBLE_DEVICES=$gpu python3 -m condiff.cli evaluate --checkpoint /tmp/runs/recipe --protocol sr \
    --images "${sets[@]}" --estimate mean --overlap "$ov" --no-progress \
    --output /tmp/eval-$tag > "$OUT/eval-$tag.log" 2>&1
  cp /tmp/eval-$tag/report.md "$OUT/report-$tag.md" 2>/dev/null
}
( score 0 ov16 16 Set5 Set14 BSD100; [ -n "${EXTRA0:-}" ] && CUDA_VISIBLE_DEVICES=0 bash -c "$EXTRA0" ) &
( [ "${OV8:-0}" = 1 ] && score 1 ov8 8 Set5 Set14; [ -n "${EXTRA1:-}" ] && CUDA_VISIBLE_DEVICES=1 bash -c "$EXTRA1" ) &
wait
cat "$OUT/times.txt"; grep -A12 -i "^| *set\|mean" "$OUT"/report-*.md | head -n 40
