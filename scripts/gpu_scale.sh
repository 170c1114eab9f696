#!/usr/bin/env bash
# Issue 32: scale-out figures on one host of several GPUs, run as a user runs them (torchrun, the
# README's "Several GPUs"). Carry .gpu2 (bash scripts/gpu_data.sh: BSD400 + Set5, Set14, BSD100).
# Every part prints its rows and leaves logs, metrics.jsonl and reports in $OUT/scale.tgz.
#   PART=scale   CONFIG (configs/sr4-gray.yaml) on each N of GPUS ("1 2 4 8"): PER (128) crops
#                per GPU, so the global batch is PER x N; the steps cut to the same images seen
#                (IMAGES, the recipe's 1,700 x 256); the warm-up the same fraction of the steps;
#                the lr by LR_RULE from the recipe's 5e-4 at a global batch of 256: sqrt (lr x
#                sqrt(batch / 256)), linear, or none. Rows: launch-to-exit wall, steady img/s (the
#                median of the logged windows after the first two), img/s per GPU, the scaling
#                against N=1, the posterior mean's Y PSNR on Set5 / Set14 / BSD100.
#   PART=shards  `condiff data pack` BSD400, then the run at the largest N reading the shards
#                (data.kind=shards): the loader must keep up (img/s against the folder's row).
#   PART=preempt the largest N, SIGTERM to torchrun after PREEMPT_S (60) s, then --resume auto to
#                the end; its weights against the uninterrupted scale run's (relative L2; 0 where
#                the GPU's kernels are deterministic, as the CPU test asserts).
#   PART=nodes   two torchrun "nodes" on this host, half the GPUs each (--nnodes 2, a c10d
#                rendezvous on localhost:RDZV_PORT), the largest N in all.
#   PART=all     scale, shards, preempt, nodes in turn (minutes: about 4 + 2 per N on H100s).
# A CPU dry run (gloo; two processes):
#   DEVICE=cpu GPUS="1 2" OUT=/tmp/scale EXTRA="model.preset=tiny data.num_workers=1
#   train.compile=false" PER=4 IMAGES=64 SETS=Set5 PART=all bash scripts/gpu_scale.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-out}; DATA=${DATA:-.gpu2}; CONFIG=${CONFIG:-configs/sr4-gray.yaml}
GPUS=${GPUS:-1 2 4 8}; PER=${PER:-128}; IMAGES=${IMAGES:-435200}; LR_RULE=${LR_RULE:-sqrt}
SETS=${SETS:-Set5 Set14 BSD100}; EXTRA=${EXTRA:-}; DEVICE=${DEVICE:-auto}
R=$OUT/scale; W=/tmp/scale; mkdir -p "$R" "$W"
NMAX=$(echo $GPUS | tr ' ' '\n' | sort -n | tail -n 1)
[ -d "$DATA/train/bsd400" ] || { echo "no $DATA/train/bsd400: carry it (scripts/gpu_data.sh)"; exit 3; }
command -v nvidia-smi > /dev/null && nvidia-smi -L | tee "$R/gpu.txt"
[ "$DEVICE" = cpu ] && export OMP_NUM_THREADS=1

plan() {  # N -> "steps warmup lr" for the same images seen
  python3 - "$1" "$PER" "$IMAGES" "$LR_RULE" <<'PY'
import math, sys
n, per, images, rule = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
batch = per * n
steps = max(1, round(images / batch))
warm = max(1, round(steps * 150 / 1700))  # the recipe's fraction
lr = 5e-4 * {"sqrt": math.sqrt(batch / 256), "linear": batch / 256, "none": 1.0}[rule]
print(steps, warm, f"{lr:.6g}")
PY
}
train() {  # DIR LOG NPROC PLAN_N [torchrun args...] -- [overrides...]: a run of PLAN_N GPUs'
  # plan (global batch PER x PLAN_N) on NPROC processes here; launch-to-exit seconds in LOG.wall
  local dir=$1 log=$2 n=$3 pn=$4; shift 4; local targs=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do targs+=("$1"); shift; done; shift
  [ ${#targs[@]} -eq 0 ] && targs=(--standalone)
  read -r steps warm lr < <(plan "$pn")
  case " $* " in *" --resume "*) ;; *) [ -n "${KEEP:-}" ] || rm -rf "${W:?}/$dir" ;; esac
  local t0 rc; t0=$(date +%s%N)
  python3 -m torch.distributed.run "${targs[@]}" --nproc-per-node="$n" \
    -m condiff.cli train --config "$CONFIG" --no-progress data.root="$DATA/train/bsd400" \
    train.output_dir="$W/$dir" train.device="$DEVICE" train.batch_size=$((PER * pn)) \
    train.steps="$steps" train.warmup_steps="$warm" train.lr="$lr" train.ckpt_every="$steps" \
    train.val_every="$steps" train.image_every="$steps" train.budget_minutes=null \
    train.max_minutes=null $EXTRA "$@" >> "$R/$log.log" 2>&1
  rc=$?; echo $(( ($(date +%s%N) - t0) / 1000000 )) > "$R/$log.wall"; return $rc
}
score() {  # DIR: the posterior mean on SETS, Y PSNR per set into $R/DIR.scores
  local sets=(); for s in $SETS; do sets+=("$DATA/test/$s"); done
  python3 -m condiff.cli evaluate --checkpoint "$W/$1" --protocol sr --images "${sets[@]}" \
    --estimate mean --no-progress --device "$DEVICE" --output "$W/$1-eval" > "$R/$1-eval.log" 2>&1
  cp "$W/$1-eval/report.md" "$R/$1-report.md" 2>/dev/null
  python3 - "$W/$1-eval/summary.csv" <<'PY' > "$R/$1.scores" 2>> "$R/$1-eval.log"
import csv, sys
rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["method"] == "mean"]
print(" / ".join(f"{float(r.get('psnr_y') or r['psnr']):.2f}" for r in rows))
PY
}
row() {  # DIR N -> one table row; the first row's img/s per GPU is the base of the scaling
  python3 - "$W/$1/metrics.jsonl" "$2" "$R/$1.wall" "$R/$1.scores" "$W/base.ips" "$1" <<'PY'
import json, statistics, sys
from pathlib import Path
log, n, wall, scores, base, name = sys.argv[1], int(sys.argv[2]), *map(Path, sys.argv[3:6]), sys.argv[6]
ips = [r["img_per_s"] for r in map(json.loads, open(log)) if r.get("kind") == "train"][2:]
s = statistics.median(ips) if ips else 0.0
if not base.exists():
    base.write_text(str(s / n))
scale = s / float(base.read_text()) if float(base.read_text()) else 0.0
sc = scores.read_text().strip() if scores.exists() else "-"
secs = int(wall.read_text()) / 1000 if wall.exists() else 0.0
print(f"| {name} | {n} | {secs:.0f} | {s:,.1f} | {s / n:,.1f} | {scale:.2f}x | {sc or '-'} |")
PY
}
header() { echo "| run | GPUs | launch to exit (s) | img/s | img/s per GPU | scaling | mean Y PSNR ($SETS) |"
           echo "|---|---|---|---|---|---|---|"; }

part_scale() {
  case " $GPUS " in *" 1 "*) rm -f "$W/base.ips" ;; esac  # N=1 sets the base afresh
  header | tee -a "$R/table.md"
  for n in $GPUS; do
    train "n$n" "n$n" "$n" "$n" -- || echo "train n$n failed: $R/n$n.log" | tee -a "$R/table.md"
    score "n$n"; row "n$n" "$n" | tee -a "$R/table.md"
  done
  echo "lr: $LR_RULE rule from 5e-4 at a global batch of 256; $PER crops per GPU; $IMAGES images" \
    "seen in every run" | tee -a "$R/table.md"
}
part_shards() {
  python3 -m condiff.cli data pack "$DATA/train/bsd400" --output "$W/packed" --shard-mb 4 \
    --no-progress > "$R/pack.log" 2>&1 || { echo "pack failed: $R/pack.log"; return 1; }
  train shards shards "$NMAX" "$NMAX" -- data.kind=shards data.shards="$W/packed" \
    || echo "shards run failed: $R/shards.log" | tee -a "$R/table.md"
  score shards; row shards "$NMAX" | tee -a "$R/table.md"
}
part_preempt() {
  train preempt preempt "$NMAX" "$NMAX" -- & local pid=$!
  sleep "${PREEMPT_S:-60}"; pkill -TERM -f "torch.distributed.run.*$W/preempt "; wait $pid
  echo "preempt: torchrun exited with $? (1: it reports the signal; the ranks' own line:)" \
    | tee -a "$R/table.md"
  grep -h "interrupted" "$R/preempt.log" | head -n 2 | tee -a "$R/table.md"
  train preempt preempt2 "$NMAX" "$NMAX" -- --resume auto
  echo "preempt: resumed to the end, exit $?" | tee -a "$R/table.md"
  python3 - "$W/preempt" "$W/n$NMAX" <<'PY' 2>&1 | tee -a "$R/table.md"
import sys
from safetensors.torch import load_file
from condiff import checkpoint as ckpt
a, b = (load_file(ckpt.latest_checkpoint(f"{d}/checkpoints") / "model.safetensors") for d in sys.argv[1:])
diff = sum((a[k].double() - b[k].double()).square().sum() for k in a) ** 0.5
norm = sum(a[k].double().square().sum() for k in a) ** 0.5
print(f"preempt: the resumed run's weights against the uninterrupted run's: relative L2 {float(diff / norm):.3g}")
PY
}
part_nodes() {  # both "nodes" write one run folder, as on a shared file system
  local half=$((NMAX / 2)) port=${RDZV_PORT:-29511}
  local rdzv=(--nnodes 2 --rdzv-backend c10d --rdzv-endpoint "localhost:$port" --rdzv-id scale2)
  local v0 v1; v0=$(seq -s, 0 $((half - 1))); v1=$(seq -s, "$half" $((NMAX - 1)))
  rm -rf "${W:?}/nodes"
  KEEP=1 CUDA_VISIBLE_DEVICES=$v1 train nodes nodes-b "$half" "$NMAX" "${rdzv[@]}" -- &
  KEEP=1 CUDA_VISIBLE_DEVICES=$v0 train nodes nodes "$half" "$NMAX" "${rdzv[@]}" --
  wait; score nodes; row nodes "$NMAX" | tee -a "$R/table.md"
}
case "${PART:-scale}" in
  scale) part_scale ;; shards) part_shards ;; preempt) part_preempt ;; nodes) part_nodes ;;
  all) part_scale; part_shards; part_preempt; part_nodes ;;
esac
cat "$R/table.md"
tar czf "$OUT/scale.tgz" -C "$OUT" scale && rm -rf "$R"
