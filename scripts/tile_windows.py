"""An estimate's scores against the tiling window and overlap (docs/NOTES.md, session 10).

    python scripts/tile_windows.py --checkpoint pretrained:sr4-gray-small-perceptual \\
        --estimate perceptual --sets ../shared/data/sr/test/Set5 ../shared/data/sr/test/Set14 \\
        --windows 64:16 64:32 128:32 512:0

The sr protocol's items and scores (Y PSNR, border 4), with LPIPS and DISTS where their weights
are set up (`condiff metrics setup`); one line per window: per set PSNR / LPIPS / DISTS and the
seconds it took.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import condiff
from condiff.data.io import from_model
from condiff.evaluate.perceptual import Perceptual
from condiff.evaluate.protocols import SRProtocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--estimate", default="mean", choices=["mean", "perceptual", "sample"])
    ap.add_argument("--sets", nargs="+", required=True, help="HR test-set folders")
    ap.add_argument("--windows", nargs="+", default=["64:16", "128:32"], help="WINDOW:OVERLAP")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe = condiff.load(a.checkpoint, device="cpu")
    proto = SRProtocol()
    items = proto.items([Path(p) for p in a.sets], color=pipe.cfg.data.color)
    perc = Perceptual(["lpips", "dists"])
    print(f"training window {pipe.window}, overlap {pipe.overlap}; {len(items)} images")
    for spec in a.windows:
        win, ov = (int(v) for v in spec.split(":"))
        pipe.window = win
        t0, rows = time.time(), {}
        for it in items:
            gen = torch.Generator().manual_seed(0)
            out = pipe(it.cond[None], estimate=a.estimate, overlap=min(ov, win - 1), generator=gen)
            pred, tgt = np.round(from_model(out[0]) * 255) / 255, from_model(it.target)
            s = proto.score(it, pred, tgt) | perc.scores(pred, tgt)
            rows.setdefault(it.group, []).append(
                [s["psnr_y"], s.get("lpips", np.nan), s.get("dists", np.nan)]
            )
        sets = "  ".join(
            f"{g}: " + " / ".join(f"{v:.4f}" for v in np.mean(r, axis=0)) for g, r in rows.items()
        )
        print(f"window {win:4d} overlap {ov:3d}: {sets}  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
