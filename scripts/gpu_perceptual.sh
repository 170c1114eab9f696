#!/usr/bin/env bash
# The perceptual-SR study on a lent GPU (issue 28; docs/NOTES.md, "Perceptual study").
# Carry .gpup (python scripts/perceptual_data.py --sr ../shared/data/sr): BSD400, the sr
# protocol's 8-bit LR inputs of Set5/Set14/BSD100, VGG16 (4 blocks, fp16).
#   PART=call1: the diffusion base (configs/sr4-rgb.yaml), the perceptual stage from it
#               (configs/sr4-rgb-perceptual.yaml, PMIN minutes, STAGE_ARGS overrides), and the
#               mean and perceptual outputs of the LR sets.
#   PART=call2: on the same warm machine (/tmp kept): the samples (SAMPLE="ddpm 50"), and
#               STAGES ("name overrides...; name overrides...") as more stages from the same
#               base, with outputs; with .gpuv carried (HR Set5/Set14 + LPIPS weights:
#               scripts/perceptual_data.py --quick) a Y PSNR / LPIPS table of them (and QUICK).
#   PART=samples: the base (BASE_ARGS) and its samples (SAMPLES="name[:Set5,Set14] sampler steps
#               [opts]; ...", all three sets unless named; "name[:sets] mean" for the mean).
#   PART=call3: RESUME ("name overrides...") resumed for PMIN more minutes, outputs, quick score.
# Outputs come back as lossless WebP in tars of < 16 MiB ($OUT/NAME-k.tar); score them here with
# scripts/score_outputs.py. Logs, metrics.jsonl and times in $OUT/logs-PART.tar.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/src:${PYTHONPATH:-}
OUT=${OUT:-out}; D=${DATA:-.gpup}; W=${WORK:-/tmp/perc}; mkdir -p "$OUT" "$W"
t0=$EPOCHREALTIME
cli() { python3 -m condiff.cli "$@"; }
stamp() { python3 -c "import sys; print(f'[{float(sys.argv[1]) - float(sys.argv[2]):7.1f} s] {sys.argv[3]}')" "$EPOCHREALTIME" "$t0" "$1" | tee -a "$OUT/times.txt"; }
base() {
  cli train --config configs/sr4-rgb.yaml --no-progress data.root=$D/bsd400 \
    train.output_dir=$W/base train.max_minutes=${BMIN:-4.3} ${BASE_ARGS:-} > "$OUT/base.log" 2>&1
  cp "$W/base/metrics.jsonl" "$OUT/base.jsonl"; stamp "base done ($(tail -n 2 $OUT/base.log | head -n 1))"
}
stage() {  # NAME [overrides...]
  local name=$1; shift
  cli train --config configs/sr4-rgb-perceptual.yaml --no-progress data.root=$D/bsd400 \
    train.output_dir=$W/$name train.init_from=$W/${FROM:-base} perceptual.vgg_weights=$D/vgg16.safetensors \
    train.max_minutes=${PMIN:-2.5} "$@" > "$OUT/$name.log" 2>&1
  cp "$W/$name/metrics.jsonl" "$OUT/$name.jsonl"; stamp "stage $name done"
}
outputs() {  # RUN ESTIMATE NAME [sample options...]
  local run=$1 est=$2 name=$3; shift 3
  for s in ${SETS:-Set5 Set14 BSD100}; do
    cli sample --checkpoint "$W/$run" --input "$D/lr/$s" --output "$W/out/$name/$s" \
      --estimate "$est" --upscale 4 --no-progress --no-compile "$@" >> "$OUT/outputs.log" 2>&1
  done
  stamp "outputs $name done"
}
pack() {  # NAME: lossless WebP, tars of < 15 MiB
  python3 - "$W/out/$1" "$OUT/$1" <<'PY'
import io, sys, tarfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from PIL import Image
def webp(p):
    b = io.BytesIO(); Image.open(p).save(b, "WEBP", lossless=True, quality=100, method=4)
    return b
src, dst = Path(sys.argv[1]), sys.argv[2]
part, size, k = None, 0, 0
files = sorted(src.rglob("*.png"))
with ProcessPoolExecutor(12) as ex:
    encoded = list(ex.map(webp, files))
for p, b in zip(files, encoded):
    if part is None or size + b.tell() > 15 * 2**20:
        if part: part.close()
        k += 1; part = tarfile.open(f"{dst}-{k}.tar", "w"); size = 0
    info = tarfile.TarInfo(str(p.relative_to(src).with_suffix(".webp"))); info.size = b.tell()
    b.seek(0); part.addfile(info, b); size += info.size
if part: part.close()
print(f"packed {src} into {k} tar(s)")
PY
}
quick() {  # NAME...: Y PSNR + LPIPS of Set5/Set14 here (needs .gpuv: HR sets + LPIPS weights)
  [ -d .gpuv/test ] || return 0
  local specs=(); for n in "$@"; do specs+=("perceptual:1:$n=$W/out/$n"); done
  CONDIFF_CACHE=.gpuv/cache python3 scripts/score_outputs.py --sr .gpuv --sets Set5 Set14 \
    --metrics lpips --no-kid --out "$W/quick" --outputs "${specs[@]}" > "$OUT/quick.log" 2>&1
  cp "$W/quick/report.md" "$OUT/quick-report.txt"; grep -A12 "^| method" "$W/quick/report.md" | head -n 40
  stamp "quick score done"
}
nvidia-smi -L | tee "$OUT/gpu.txt"
[ -d "$D/bsd400" ] || { echo "no $D/bsd400: carry it (a fresh machine lost call 1's)"; exit 3; }
case "${PART:-call1}" in
  call1)
    base
    stage p1 train.steps=20000 ${STAGE_ARGS:-}
    [ -n "${NO_MEAN:-}" ] || { outputs p1 mean mean; pack mean; }
    outputs p1 perceptual p1; pack p1 ;;
  call2)
    [ -n "${SAMPLE:-}" ] && { read -r -a S <<< "$SAMPLE"; outputs p1 sample "sample-${S[0]}${S[1]}" --sampler "${S[0]}" --steps "${S[1]}"; pack "sample-${S[0]}${S[1]}"; }
    # STAGES="name overrides...; name overrides...": stages from the same base, in turn
    names=(); IFS=';' read -r -a ALL <<< "${STAGES:-${STAGE2:-}}"
    for spec in "${ALL[@]}"; do
      read -r -a S2 <<< "$spec"; [ ${#S2[@]} -gt 0 ] || continue
      stage "${S2[0]}" train.steps=20000 "${S2[@]:1}"; outputs "${S2[0]}" perceptual "${S2[0]}"; pack "${S2[0]}"
      names+=("${S2[0]}")
    done
    quick ${QUICK:-} "${names[@]}" ;;
  samples)
    # the base (BASE_ARGS: e.g. the sample levers) and its samples, SAMPLES="name sampler steps
    # [sample options...]; ...", each packed as soon as it is written (a kill keeps the rest)
    base; (cd "$OUT" && tar -cf logs-base.tar base.log base.jsonl times.txt)
    IFS=';' read -r -a ALL <<< "${SAMPLES:-s ddpm 50}"
    for spec in "${ALL[@]}"; do
      read -r -a S3 <<< "$spec"; [ ${#S3[@]} -gt 1 ] || continue
      n=${S3[0]%%:*}; sets=Set5,Set14,BSD100; [[ ${S3[0]} == *:* ]] && sets=${S3[0]#*:}
      if [ "${S3[1]}" = mean ]; then SETS=${sets//,/ } outputs base mean "$n"
      else SETS=${sets//,/ } outputs base sample "$n" --sampler "${S3[1]}" --steps "${S3[2]}" "${S3[@]:3}"; fi
      pack "$n"; (cd "$OUT" && tar -cf logs-samples.tar *.log *.jsonl *.txt)
    done ;;
  call3)
    # RESUME="name overrides...": the stage resumed (--resume auto) for PMIN more minutes
    read -r -a R <<< "$RESUME"
    stage "${R[0]}" train.steps=20000 --resume auto "${R[@]:1}"
    outputs "${R[0]}" perceptual "${R[0]}-long"; pack "${R[0]}-long"; quick "${R[0]}-long" ;;
esac
grep -h "validation\|Error\|error\|Traceback" "$OUT"/*.log | tail -n 20
# the device returns at most 8 files: the logs travel as one tar
(cd "$OUT" && tar -cf "logs-${PART:-call1}.tar" *.log *.jsonl *.txt && rm -f ./*.log ./*.jsonl ./*.txt)
ls -la "$OUT"
