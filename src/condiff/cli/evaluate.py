"""``condiff evaluate``: score the posterior mean and samples against targets and baselines."""

from __future__ import annotations

import argparse
import sys

from condiff.cli.options import add_dtype, add_no_progress, add_speed, speed


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "evaluate",
        help="PSNR/SSIM (and LPIPS/DISTS) against targets and the task's baseline",
        description="Score the posterior mean (one network call) and samples against the "
        "targets and the task's baseline (bicubic for super-resolution): on a paired folder "
        "(--data ROOT with cond/ and target/), on clean images degraded by the run's task "
        "(--images DIR), by default on the run's own held-out images, or with --protocol "
        "sr|denoise|jpeg on the field's test sets as the field scores them. Writes a report "
        "folder: metrics.csv, summary.csv, plots, grids/, report.md.",
    )
    s.add_argument(
        "--checkpoint", required=True, help="run or checkpoint folder, or pretrained:NAME"
    )
    s.add_argument("--data", default=None, help="paired root with cond/ and target/")
    s.add_argument(
        "--images",
        nargs="+",
        default=None,
        help="folder of clean images for the run's task; with --protocol, one or more "
        "folders of clean test images, each a test set (e.g. Set5 Set14 BSD100)",
    )
    _add_protocol(s)
    s.add_argument(
        "--estimate",
        choices=["all", "both", "mean", "sample", "perceptual"],
        default="all",
        help="which estimates to score: the posterior mean (one network call), samples, the "
        "perceptual estimate (one call; runs with a perceptual stage), or all (default; "
        "'both' is its older name)",
    )
    s.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="K > 1 adds the mean of K samples (and a std map in the grids)",
    )
    s.add_argument("--output", default=None, help="report folder (default: RUN/eval)")
    _add_sweep(s)
    s.add_argument("--limit", type=int, default=None, help="evaluate at most this many images")
    s.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="pixels shared by neighbouring tiles on images larger than the training crop "
        "(default: crop / 4)",
    )
    s.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="center-crop images larger than this (pixels per side)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    add_dtype(s)
    add_speed(s)
    s.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable image (default: list it in the report, skip it, "
        "score the rest, exit 1)",
    )
    add_no_progress(s)
    s.set_defaults(fn=run)


def _add_protocol(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--protocol",
        choices=["default", "sr", "denoise", "jpeg"],
        default="default",
        help="default: PSNR/SSIM/MAE on [0, 1]; sr: the field's super-resolution protocol "
        "(mod-crop, 8-bit bicubic input, Y of BT.601 with the border cropped); denoise: "
        "unclipped Gaussian noise per --sigma, PSNR/SSIM of the 8-bit output (RGB PSNR for "
        "colour); jpeg: IJG JPEG per --quality of the gray image or BT.601 Y, PSNR/SSIM/PSNR-B. "
        "Each shows the published rows of its sets",
    )
    s.add_argument(
        "--sigma",
        nargs="+",
        type=float,
        default=None,
        help="--protocol denoise: noise levels on the 0-255 scale (default: 15 25 50)",
    )
    s.add_argument(
        "--quality",
        nargs="+",
        type=int,
        default=None,
        help="--protocol jpeg: JPEG qualities (default: 10 20 30 40)",
    )
    s.add_argument(
        "--metrics",
        nargs="+",
        choices=["lpips", "dists", "kid"],
        default=None,
        help="perceptual scores beside PSNR/SSIM (default: lpips and dists, and with --protocol "
        "sr kid (KID and FID on crops, per set), where their weights are set up, see `condiff "
        "metrics setup`; the report says what it skipped)",
    )
    s.add_argument(
        "--kid-crop",
        type=int,
        default=128,
        help="KID/FID: side of the non-overlapping crops each image gives (default 128)",
    )


def _add_sweep(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--sweep",
        action="store_true",
        help="quality vs steps: every sampler in --samplers at every --steps-list",
    )
    s.add_argument(
        "--samplers",
        nargs="+",
        default=None,
        help="samplers (default: the run's sample.sampler; with --sweep: ddim dpmpp_2m heun)",
    )
    s.add_argument(
        "--steps-list",
        nargs="+",
        type=int,
        default=None,
        help="step counts (default: the run's sample.steps; with --sweep: 5 10 20 50)",
    )
    s.add_argument(
        "--eta",
        nargs="+",
        type=float,
        default=None,
        help="stochasticity of the samples (ddim, dpmpp_2m_sde: 0 deterministic, 1 "
        "ancestral; default: the run's sample.eta, else the sampler's own); several sweep it",
    )
    s.add_argument(
        "--samples",
        nargs="+",
        default=None,
        metavar="SAMPLER:STEPS[:ETA]",
        help="score exactly these sample settings instead of --samplers x --steps-list x --eta, "
        "e.g. dpmpp_2m:20 dpmpp_2m_sde:30:1 ddpm:100 (the perception-distortion plane)",
    )


def run(a: argparse.Namespace) -> int:
    from condiff.cli import EXIT_SOME_FAILED
    from condiff.evaluate.run import evaluate_run

    report = evaluate_run(
        a.checkpoint,
        out_dir=a.output,
        data=a.data,
        images=a.images,
        protocol=a.protocol,
        sigmas=a.sigma,
        qualities=a.quality,
        metrics=a.metrics,
        kid_crop=a.kid_crop,
        estimate=a.estimate,
        num_samples=a.num_samples,
        sweep=a.sweep,
        samplers=a.samplers,
        steps=a.steps_list,
        etas=a.eta,
        samples=a.samples,
        seed=a.seed,
        device=a.device,
        dtype=a.dtype,
        limit=a.limit,
        overlap=a.overlap,
        max_side=a.max_side,
        progress=not a.no_progress,
        strict=a.strict,
        **speed(a),
    )
    print((report.out_dir / "report.md").read_text())  # type: ignore[union-attr]
    print(f"report folder: {report.out_dir}")
    if report.skipped:
        print(f"{len(report.skipped)} file(s) skipped (listed in report.md)", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0
