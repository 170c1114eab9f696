"""How much a JPEG model's gain depends on JPEG's 8 x 8 grid starting at the input's corner.

Each image is encoded whole at each quality; a cut of SIZE x SIZE is restored (posterior mean,
one network call) with its corner on the grid and DX, DY pixels off it, and the table gives the
mean's PSNR gain over the JPEG cut, averaged over the images. condiff's JPEG task encodes each
training crop itself, so the grid always starts at the crop's corner.

    python scripts/jpeg_grid_shift.py CHECKPOINT FOLDER [--limit 8] [--quality 10 30]
        [--shifts 0,0 4,4 1,0 0,3] [--size 192]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import condiff
from condiff.data.io import from_model, list_images, to_model
from condiff.evaluate.metrics import psnr_255 as psnr
from condiff.evaluate.protocols.jpeg import jpeg_roundtrip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("folder", type=Path)
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--quality", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--shifts", nargs="+", default=["0,0", "4,4", "1,0", "0,3"])
    ap.add_argument("--size", type=int, default=192)
    a = ap.parse_args()
    pipe = condiff.load(a.checkpoint)
    mode = "RGB" if pipe.target_channels == 3 else "L"
    shifts = [tuple(int(v) for v in s.split(",")) for s in a.shifts]
    paths = list_images(a.folder)
    gains: dict[tuple[int, tuple[int, int]], list[float]] = {}
    n = a.size
    for path in paths[: a.limit]:
        clean = np.asarray(Image.open(path).convert(mode))
        h, w = clean.shape[:2]
        y0, x0 = (h - n - 8) // 2 // 8 * 8, (w - n - 8) // 2 // 8 * 8  # on the grid
        for q in a.quality:
            low = jpeg_roundtrip(clean, q)
            for dx, dy in shifts:
                ys, xs = slice(y0 + dy, y0 + dy + n), slice(x0 + dx, x0 + dx + n)
                c, lo = clean[ys, xs].reshape(n, n, -1), low[ys, xs].reshape(n, n, -1)
                cond = to_model(lo.astype(np.float32) / 255)[None]
                est8 = np.round(from_model(pipe(cond, estimate="mean")[0]) * 255)
                gains.setdefault((q, (dx, dy)), []).append(psnr(est8, c) - psnr(lo, c))
    print(
        f"{a.checkpoint}: mean's PSNR gain over the JPEG cut (dB), {n} x {n} cuts of "
        f"{min(a.limit, len(paths))} images of {a.folder.name}"
    )
    print("| quality | " + " | ".join(f"grid + ({dx}, {dy})" for dx, dy in shifts) + " |")
    print("|---" * (1 + len(shifts)) + "|")
    for q in a.quality:
        cells = [f"{np.mean(gains[(q, s)]):+.2f}" for s in shifts]
        print(f"| {q} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
