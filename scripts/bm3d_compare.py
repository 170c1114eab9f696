"""A denoiser's posterior mean against BM3D run on the same noisy inputs (issue 30, item 5).

    pip install bm3d        # the reference implementation (Mäkinen et al.), not a condiff need
    python scripts/bm3d_compare.py --checkpoint pretrained:denoise-gray-small [MORE ...] \\
        --sets ../shared/data/restore/test/Set12 --bundled --sigma 15 25 50

The denoise protocol's items (the clean 8-bit image plus seeded float noise, unclipped), the
model's one-call mean and BM3D (`bm3d.bm3d` for gray, `bm3d.bm3d_rgb` for colour, told the true
sigma) on the same noisy array, both clamped and rounded to 8 bits, scored by the protocol
(PSNR on the 0-255 scale). One row per set and level: the mean, BM3D, the difference and how
many images the mean wins. ``--bundled`` adds the photographs condiff ships (scikit-image's).
Several checkpoints are scored on the same inputs against one BM3D run; a model trained with a
noise-level map gets each level's map (BM3D too is told sigma); ``--auto-level`` scores it
run blind too, given the level ``condiff sample --noise-level auto`` estimates from the noisy
input (``condiff.data.io.estimate_noise_level``), against BM3D given the same estimate (blind
against blind) as well as BM3D told sigma.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import condiff
from condiff.data.bundled import export_bundled
from condiff.data.io import estimate_noise_level, from_model
from condiff.data.tasks import with_noise_map
from condiff.evaluate.protocols import DenoiseProtocol


def bm3d_estimate(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W, C) noisy float image in [0, 1]-ish -> BM3D's estimate, same shape."""
    import bm3d

    s = sigma / 255.0
    if noisy.shape[2] == 3:
        return np.asarray(bm3d.bm3d_rgb(noisy, s), dtype=np.float32)
    return np.asarray(bm3d.bm3d(noisy[..., 0], s), dtype=np.float32)[..., None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", nargs="+", default=["pretrained:denoise-gray-small"])
    ap.add_argument("--sets", nargs="*", default=[], help="clean test-set folders")
    ap.add_argument("--bundled", action="store_true", help="also the bundled photographs")
    ap.add_argument("--sigma", type=float, nargs="+", default=[15, 25, 50])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--auto-level",
        action="store_true",
        help="also score each map model given its estimated level (as --noise-level auto)",
    )
    a = ap.parse_args()
    try:
        import bm3d  # noqa: F401
    except ImportError:
        raise SystemExit("this comparison needs the bm3d package: pip install bm3d") from None
    torch.set_num_threads(a.threads)
    loaded = [condiff.load(c, device="cpu") for c in a.checkpoint]
    # (label, pipeline, level source): a map model is told sigma, and with --auto-level also
    # given its own estimate
    runs = [(c, p, "told") for c, p in zip(a.checkpoint, loaded, strict=True)]
    runs += [
        (f"{c} (auto level)", p, "auto") for c, p, _ in runs if a.auto_level and p.cfg.noise_map
    ]
    pipes = [p for _, p, _ in runs]
    color = pipes[0].cfg.data.color
    if any(p.cfg.data.color != color for p in pipes):
        raise SystemExit("the checkpoints must all be gray or all colour")
    proto = DenoiseProtocol(sigmas=tuple(a.sigma))  # items without a map: the noisy image
    folders = [Path(s) for s in a.sets]
    with tempfile.TemporaryDirectory() as tmp:
        if a.bundled:
            folder = Path(tmp) / "bundled"
            export_bundled(folder, color)
            folders.append(folder)
        items = proto.items(folders, color=color)
    # (set, level) -> per image: BM3D's PSNR (told sigma; then given the estimate with
    # --auto-level), then each model's
    refs = ["told", "auto"] if a.auto_level else ["told"]
    rows: dict[tuple[str, str], list[list[float]]] = {}
    t_model, t_bm3d = [0.0] * len(pipes), 0.0
    for it in items:
        sigma = float(it.level.split("=")[1])
        levels = {"told": sigma}
        if a.auto_level:  # the level `--noise-level auto` would give this input
            levels["auto"] = estimate_noise_level(it.cond.numpy())
        tgt = from_model(it.target)
        row = []
        for source in refs:
            t0 = time.perf_counter()
            ref = bm3d_estimate(from_model(it.cond, clip=False), levels[source])
            t_bm3d += time.perf_counter() - t0
            row.append(proto.score(it, np.round(np.clip(ref, 0, 1) * 255) / 255, tgt)["psnr"])
        for i, (_, pipe, source) in enumerate(runs):
            level = levels[source]
            cond = with_noise_map(it.cond, level) if pipe.cfg.noise_map else it.cond
            t0 = time.perf_counter()
            mean = pipe(cond[None], estimate="mean", generator=torch.Generator().manual_seed(0))
            t_model[i] += time.perf_counter() - t0
            row.append(proto.score(it, np.round(from_model(mean[0]) * 255) / 255, tgt)["psnr"])
        rows.setdefault((it.group, it.level), []).append(row)
        bm = ", ".join(f"{v:.2f}" for v in row[: len(refs)])
        scores = ", ".join(f"{v:.2f}" for v in row[len(refs) :])
        est = f" (estimate {levels['auto']:.1f})" if a.auto_level else ""
        print(f"  {it.group} {it.name} {it.level}{est}: BM3D {bm}, mean {scores}", flush=True)
    for i, (ckpt, _, source) in enumerate(runs):
        told = "told sigma" if source == "told" else "given the same estimate"
        print(f"\n{ckpt} (posterior mean, one call) against BM3D {told}, same noisy inputs")
        print("| set | level | images | mean | BM3D | mean - BM3D | mean wins |")
        print("|---|---|---|---|---|---|---|")
        for (group, level), r in rows.items():
            psnrs = np.array(r)
            t, o = psnrs[:, refs.index(source)], psnrs[:, len(refs) + i]
            print(
                f"| {group} | {level} | {len(r)} | {o.mean():.2f} | {t.mean():.2f} | "
                f"{o.mean() - t.mean():+.2f} | {(o > t).sum()} |"
            )
        print(f"CPU seconds: the mean {t_model[i]:.0f}, BM3D {t_bm3d:.0f} ({a.threads} threads)")


if __name__ == "__main__":
    main()
