#!/usr/bin/env bash
# Build the data a GPU call carries (device tool: at most 64 MiB per call), from the shared
# benchmark folders. .gpu1: BSD400 + the gray denoising and JPEG test sets (LIVE1 as the 8-bit
# BT.601 Y images the JPEG protocol scores: exactly its first step, a third of the bytes).
# .gpu2: BSD400 + the SR test sets (BSD100 JPEGs; CBSD68 is made from them on the device).
# .gpu3: BSD400 + CBSD68 (colour denoising; written by the shared make_cbsd68.py, 18 MB).
# .gpu4: BSD400 + LIVE1 in RGB (colour JPEG, scored in RGB; 18 MB).
# .gpuw: the LPIPS weights (condiff metrics setup, converted here). All are git-ignored; each
# carry stays under the 64 MiB a call takes (42-47 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared/data}
rm -rf .gpu1 .gpu2 .gpu3 .gpu4 .gpuw
mkdir -p .gpu1/train .gpu1/test .gpu2/train .gpu2/test .gpu3/train .gpu3/test .gpu4/train \
  .gpu4/test .gpuw
for d in .gpu1 .gpu2 .gpu3 .gpu4; do cp -r "$SHARED/sr/train/bsd400" "$d/train/"; done
for s in Set12 BSD68 Classic5; do cp -r "$SHARED/restore/test/$s" .gpu1/test/; done
.venv/bin/python - "$SHARED/restore/test/LIVE1" .gpu1/test/LIVE1 <<'PY'
import sys
from pathlib import Path
from PIL import Image
from condiff.data.io import list_images, read_image
from condiff.evaluate.metrics import y_uint8
out = Path(sys.argv[2]); out.mkdir(parents=True)
for p in list_images(sys.argv[1]):
    Image.fromarray(y_uint8(read_image(p)[0])).save(out / f"{p.stem}.png")
PY
for s in Set5 Set14 BSD100; do cp -r "$SHARED/sr/test/$s" .gpu2/test/; done
cp "$SHARED/restore/test/BSD68_ids.txt" .gpu2/test/
.venv/bin/python "$SHARED/restore/make_cbsd68.py" .gpu3/test/CBSD68
cp -r "$SHARED/restore/test/LIVE1" .gpu4/test/
cp "${CONDIFF_CACHE:-$HOME/.cache/condiff}/metrics/lpips-alex-v0.1.safetensors" .gpuw/
du -sh .gpu1 .gpu2 .gpu3 .gpu4 .gpuw
