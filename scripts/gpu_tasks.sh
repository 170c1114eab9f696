#!/usr/bin/env bash
# Task studies on a lent two-GPU machine (docs/NOTES.md, "Task study"): each JOB trains one recipe
# with `condiff train` and scores it with `condiff evaluate --protocol ...` (scripts/study.py).
# Jobs named in G0 run on GPU 0 side by side, those in G1 on GPU 1. Carry the data folder
# (DATA, from scripts/gpu_data.sh) and .gpuw (the LPIPS weights). Logs, results, reports, the
# small models' weights and a few grids come back as one tarball per job in $OUT.
#   CALL=1: denoise-gray (GPU 0), jpeg-gray (GPU 1); CALL=small: their small models
#   CALL=2: denoise-rgb (GPU 0), the colour SR samples study (GPU 1)
#   CALL=small1: the small models side by side on ONE GPU (a one-GPU kind): the denoiser blind
#           and with a noise-level map (data.task.noise_map; BM3D is told the level too), and
#           JPEG; each on a budget of SMALLMIN (4) minutes of training loop with what the task
#           study learnt (EMA 0.999, compiled, the cosine fitted to the budget); scored on Set12
#           + BSD68 / Classic5 + LIVE1; their fp16 weights come back for
#           scripts/bm3d_compare.py on the CPU
#   CALL=smalld: the blind small denoiser alone on ONE GPU for SMALLMIN (6) minutes (GTEST=1:
#           first tests/gpu's CUDA-graphed training test, below)
#   CALL=loops: the small denoiser's train loop with each step read at once, decided on the
#           device, and with CUDA graphs (~6 minutes with three cold compiles; carry DATA, .gpu1)
#   CALL=probe: why the small model trains at only ~1,850 img/s alone (session 17): its recipe
#           step compiled vs CUDA graphs at batch 64 and 256, and `condiff train`'s own loop
#           beside the bare step (~5 minutes: five cold compiles; no carry beyond the tree)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export CONDIFF_CACHE=/tmp/cache; mkdir -p $CONDIFF_CACHE/metrics
cp .gpuw/*.safetensors $CONDIFF_CACHE/metrics/ 2>/dev/null
OUT=${OUT:-out}; mkdir -p "$OUT"; DATA=${DATA:-.gpu1}
nvidia-smi -L | tee "$OUT/gpu.txt"
EXTRA=${EXTRA:-}  # overrides for every job (CPU dry runs: tiny models, few steps)
study() {  # NAME CONFIG PROTOCOL "SETS" SAMPLE_LIMIT "SAMPLES" [overrides]
  local name=$1 config=$2 proto=$3 sets=$4 limit=$5 samples=$6; shift 6
  local d=/tmp/study/$name o=$OUT/$name; mkdir -p "$o/grids"
  python3 scripts/study.py --name "$name" --config "$config" --data "$DATA" --out /tmp/study \
    --protocol "$proto" --sets $sets --sample-limit "$limit" ${samples:+--samples $samples} \
    -- "$@" $EXTRA > "$o/$name.log" 2>&1
  case $name in *small*) python3 scripts/ship_weights.py "$d" "$o/weights" >> "$o/$name.log" 2>&1 ;; esac
  # two grids (input | mean | sample | clean) per set and level, and the plots
  for g in $(find "$d/eval/samples/grids" -mindepth 1 -type d 2>/dev/null); do
    for f in $(ls "$g"/*.png 2>/dev/null | sort | head -n 1); do
      cp "$f" "$o/grids/$(echo "${f#$d/eval/samples/grids/}" | tr '/=' '__')"; done; done
  cp "$d"/eval/samples/*.png "$o/" 2>/dev/null
}
pack() {  # one tarball per job, under the 16 MiB a returned file may have (grids go first)
  for o in "$OUT"/*/; do
    tar czf "${o%/}.tgz" -C "$OUT" "$(basename "$o")"
    [ "$(stat -c %s "${o%/}.tgz")" -gt 15000000 ] && rm -rf "$o/grids" "$o"/*.png \
      && tar czf "${o%/}.tgz" -C "$OUT" "$(basename "$o")"
    rm -rf "$o"; done; }
case "${CALL:-1}" in
  1) CUDA_VISIBLE_DEVICES=0 study D1-denoise-gray configs/denoise-gray.yaml denoise \
       "Set12 BSD68" 10 "" train.max_minutes=5.0 &
     CUDA_VISIBLE_DEVICES=1 study J1-jpeg-gray configs/jpeg-gray.yaml jpeg \
       "Classic5 LIVE1" 10 "" train.max_minutes=5.0 &
     wait ;;
  small) CUDA_VISIBLE_DEVICES=0 study denoise-gray-small configs/denoise-gray-small.yaml denoise \
           "BSD68" 0 "" &
         CUDA_VISIBLE_DEVICES=1 study jpeg-gray-small configs/jpeg-gray-small.yaml jpeg \
           "LIVE1" 0 "" &
         wait ;;
  small1) SMALL="train.steps=100000 train.budget_minutes=${SMALLMIN:-4} train.max_minutes=null
           train.ema_decay=0.999 train.compile=true data.num_workers=7"
          study denoise-gray-small configs/denoise-gray-small.yaml denoise "Set12 BSD68" 0 "" \
            $SMALL &
          study denoise-gray-small-map configs/denoise-gray-small.yaml denoise "Set12 BSD68" 0 "" \
            $SMALL model.in_img_channels=3 data.task.noise_map=true &
          study jpeg-gray-small configs/jpeg-gray-small.yaml jpeg "Classic5 LIVE1" 0 "" $SMALL &
          wait ;;
  smalld) # the blind small denoiser alone on the GPU, SMALLMIN (6) minutes: does a longer
          # budget close its last 0.05 dB to BM3D at sigma 15 (session 15)?
          # GTEST=1: first the CUDA training tests (graphs; steps decided on the device; ~2 min);
          # if one fails, the run drops EXTRA's train.cuda_graphs=true and adds
          # train.fused_adamw=false (foreach AdamW: each step's finiteness read at once, as before
          # session 18)
          if [ -n "${GTEST:-}" ]; then
            python3 -m pytest -q -p no:cacheprovider tests/gpu/test_cuda.py \
              -k "cuda_graphs or fit_on_cuda" \
              > "$OUT/gtest.txt" 2>&1; rc=$?; tail -n 3 "$OUT/gtest.txt"
            [ $rc -ne 0 ] && EXTRA="${EXTRA//train.cuda_graphs=true/} train.fused_adamw=false" \
              && echo "graphs and fused AdamW off: rc $rc"
          fi
          study denoise-gray-small configs/denoise-gray-small.yaml denoise "Set12 BSD68" 0 "" \
            train.steps=100000 train.budget_minutes="${SMALLMIN:-6}" train.max_minutes=null \
            train.compile=true ;;
  loops) # issue 33: `condiff train`'s own loop on the small denoiser (batch 64, BSD400 from
         # DATA), three ways side by side in one call, LOOPSTEPS (1000) steps each (no budget:
         # session 19's 0.75 minutes each counted the 60-73 s cold start-up and left no window):
         # each step read at once (foreach AdamW, as before session 18), decided on the device
         # (fused AdamW, the default), and that with CUDA graphs; img/s per 200-step window
         mkdir -p "$OUT/loops"
         for v in "sync train.fused_adamw=false" "device" "graphs train.cuda_graphs=true"; do
           set -- $v; name=$1; shift
           python3 -m condiff.cli train --config configs/denoise-gray-small.yaml --no-progress \
             data.root="$DATA/train/bsd400" train.output_dir="/tmp/loops/$name" \
             train.steps="${LOOPSTEPS:-1000}" train.budget_minutes=null train.max_minutes=3 \
             train.compile=true \
             train.log_every=200 train.val_every=100000 train.image_every=100000 \
             train.ckpt_every=100000 "$@" $EXTRA > "$OUT/loops/$name.log" 2>&1
           echo "$name: rc $?, img/s of the last windows:" \
             "$(grep -oE "[0-9.]+ img/s" "$OUT/loops/$name.log" | tail -n 4 | tr '\n' ' ')"
         done ;;
  probe) mkdir -p "$OUT/probe"
         for b in 64 256; do
           python3 -m condiff.cli bench --recipe configs/denoise-gray-small.yaml --batch "$b" \
             --only compiled graphed 2>&1 | tail -n 8 | tee "$OUT/probe/recipe-b$b.txt"; done
         python3 -m condiff.cli bench --presets small --size 64 --batch 64 --only bf16 \
           --no-diffusers --train-loop 200 2>&1 | tail -n 12 | tee "$OUT/probe/loop.txt" ;;
  2) python3 - "$DATA" <<'PY'  # CBSD68: the 68 BSDS val JPEGs of BSD68_ids.txt, decoded
import sys
from pathlib import Path
from PIL import Image
d = Path(sys.argv[1]) / "test"; out = d / "CBSD68"; out.mkdir(exist_ok=True)
for line in (d / "BSD68_ids.txt").read_text().split("\n"):
    if line.strip():
        i = line.split()[1]
        Image.open(d / "BSD100" / f"{i}.jpg").convert("RGB").save(out / f"{i}.png")
PY
     CUDA_VISIBLE_DEVICES=0 study C2-denoise-rgb configs/denoise-rgb.yaml denoise "CBSD68" 20 "" \
       train.max_minutes=5.0 &
     CUDA_VISIBLE_DEVICES=1 study S1-sr-rgb configs/sr4-rgb.yaml sr "Set5 Set14 BSD100" 20 \
       "dpmpp_2m:20 dpmpp_2m_sde:30:1 ddpm:100" train.batch_size=128 train.steps=2800 \
       train.warmup_steps=300 train.ckpt_every=1000 train.val_every=3000 train.image_every=3000 \
       data.num_workers=14 train.max_minutes=5.0 &
     wait ;;
esac
grep -h "^\[" "$OUT"/*/*.log 2>/dev/null | tail -n 90
grep -h -i "error\|traceback" "$OUT"/*/*.log 2>/dev/null | head -n 20
pack; ls -la "$OUT"
