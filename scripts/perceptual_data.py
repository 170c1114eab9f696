"""Data for a perceptual-SR call on a lent GPU (docs/NOTES.md, "Perceptual study").

Writes, under OUT (default .gpup, git-ignored):
- ``bsd400/``: the training images as they are (JPEG);
- ``lr/{Set5,Set14,BSD100}/NAME.png``: the inputs of ``condiff evaluate --protocol sr`` (RGB:
  mod-crop to 4, bicubic downscale, rounded to 8 bits), for ``condiff sample --upscale 4``;
  the outputs are scored here against the HR images by ``scripts/score_outputs.py``;
- ``vgg16.safetensors``: VGG16's first ``--depth`` blocks in fp16 (the feature loss), from
  ``condiff metrics setup``'s file. Carrying HR sets, all of VGG16 and BSD400 would pass the 64 MiB
  a call carries.

    python scripts/perceptual_data.py --sr ../shared/data/sr [--out .gpup] [--depth 4]

A second carry for a call on the same warm machine (the first one's .gpup is still there):

    python scripts/perceptual_data.py --sr ../shared/data/sr --out .gpuv --depth 5 --quick

writes only VGG16 (here all five blocks, for conv5_3), the HR images of Set5 and Set14 and the
LPIPS weights (``cache/metrics/``), so ``gpu_perceptual.sh`` can score its stages on the GPU
machine and pick one to resume without a round trip.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from condiff.data.io import from_model, write_image
from condiff.evaluate.perceptual import FILES, cache_dir
from condiff.evaluate.protocols.sr import SRProtocol
from condiff.nn.vgg import BLOCKS

SETS = ("Set5", "Set14", "BSD100")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sr", required=True, help="the SR data folder (train/bsd400, test/...)")
    ap.add_argument("--out", default=".gpup")
    ap.add_argument("--depth", type=int, default=4, help="VGG16 blocks to carry (1..5)")
    ap.add_argument("--no-train", action="store_true", help="leave bsd400/ out")
    ap.add_argument("--quick", action="store_true", help="VGG16, HR Set5/Set14, LPIPS weights")
    a = ap.parse_args()
    sr, out = Path(a.sr), Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.quick:
        for s in ("Set5", "Set14"):
            shutil.copytree(sr / "test" / s, out / "test" / s, dirs_exist_ok=True)
        (out / "cache" / "metrics").mkdir(parents=True, exist_ok=True)
        shutil.copy(cache_dir() / FILES["lpips"], out / "cache" / "metrics" / FILES["lpips"])
    elif not a.no_train:
        shutil.copytree(sr / "train" / "bsd400", out / "bsd400", dirs_exist_ok=True)
    proto = SRProtocol(factor=4)
    for item in [] if a.quick else proto.items([sr / "test" / s for s in SETS], color="rgb"):
        low = from_model(item.low)  # (H, W, 3) in [0, 1], on the 8-bit grid
        assert np.abs(low * 255 - np.round(low * 255)).max() < 1e-3, "not 8-bit"
        write_image(out / "lr" / item.group / f"{item.name}.png", low)
    sd = load_file(str(cache_dir() / FILES["vgg16"]))
    keep = [i for block in BLOCKS[: a.depth] for i in block]
    half = {
        f"conv{i}.{p}": sd[f"conv{i}.{p}"].to(torch.float16)
        for i in keep
        for p in ("weight", "bias")
    }
    save_file(half, str(out / "vgg16.safetensors"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
