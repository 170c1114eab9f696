"""A README strip for a JPEG model: JPEG | posterior mean | one sample | clean, on a cut of one
image encoded whole (the cut's corner on JPEG's 8 x 8 grid unless told otherwise).

    python scripts/jpeg_strip.py CHECKPOINT IMAGE X0 Y0 OUT.jpg [--quality 10] [--size 240 200]

Session 19: `python scripts/jpeg_strip.py WEIGHTS LIVE1/parrots.png 296 152
docs/images/jpeg-rgb-q10.jpg` (jr15's fp16 weights), and with X0 Y0 = 300 150 (4 and 6 pixels
off the grid) for the caption's comparison.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

import condiff
from condiff.data.io import from_model, to_model
from condiff.evaluate.metrics import psnr_255 as psnr
from condiff.evaluate.protocols.jpeg import jpeg_roundtrip


def to8(t: torch.Tensor) -> np.ndarray:
    """The network's (1, C, H, W) estimate as (H, W, C) uint8."""
    return np.round(from_model(t[0]) * 255).astype(np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("image")
    ap.add_argument("x0", type=int)
    ap.add_argument("y0", type=int)
    ap.add_argument("out")
    ap.add_argument("--quality", type=int, default=10)
    ap.add_argument("--size", type=int, nargs=2, default=(240, 200), metavar=("W", "H"))
    ap.add_argument("--steps", type=int, default=20, help="the sample's steps")
    a = ap.parse_args()
    pipe = condiff.load(a.checkpoint)
    mode = "RGB" if pipe.target_channels == 3 else "L"
    clean = np.asarray(Image.open(a.image).convert(mode))
    low = jpeg_roundtrip(clean, a.quality)  # the whole image encoded, then cut
    (w, h), x0, y0 = a.size, a.x0, a.y0
    c, low = clean[y0 : y0 + h, x0 : x0 + w], low[y0 : y0 + h, x0 : x0 + w]
    c, low = (x.reshape(h, w, -1) for x in (c, low))
    cond = to_model(low.astype(np.float32) / 255)[None]
    mean = to8(pipe(cond, estimate="mean"))
    gen = torch.Generator().manual_seed(0)
    sample = to8(pipe(cond, estimate="sample", steps=a.steps, generator=gen))
    print(
        f"cut at ({x0}, {y0}), {w} x {h}, q {a.quality}: PSNR JPEG {psnr(low, c):.2f}, "
        f"mean {psnr(mean, c):.2f}, sample {psnr(sample, c):.2f}"
    )
    gap = np.full((h, 4, c.shape[2]), 255, np.uint8)
    row = np.concatenate([low, gap, mean, gap, sample, gap, c], axis=1)
    Image.fromarray(row.squeeze(2) if row.shape[2] == 1 else row).save(a.out, quality=92)


if __name__ == "__main__":
    main()
