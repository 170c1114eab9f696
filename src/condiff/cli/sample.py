"""``condiff sample``: translate your own images (files in, files out, names kept)."""

from __future__ import annotations

import argparse

from condiff.cli.options import add_no_progress, add_sampling, speed

CHECKPOINT_HELP = "run folder, checkpoint folder, or pretrained:NAME (weights shipped with condiff)"


def noise_level_arg(text: str) -> float | str:
    """``--noise-level``: a number (checked against the model's layout later) or ``auto``."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a noise std on the 0-255 scale (e.g. 25) or 'auto', got {text!r}"
        ) from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "sample",
        help="translate your own images with a trained model",
        description="Sample targets for condition images (no ground truth needed). "
        "Keeps file names; writes 8-bit PNG, or 16-bit TIFF for 16-bit inputs. "
        "Images larger than the training crop run as overlapping tiles blended at "
        "every step (window = training crop, overlap = window/4 by default).",
    )
    s.add_argument("--checkpoint", default=None, help=CHECKPOINT_HELP)
    s.add_argument(
        "--engine",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="run the network in PyTorch (default) or ONNX Runtime (--model)",
    )
    s.add_argument("--model", default=None, help="ONNX model from `condiff export` (onnxruntime)")
    s.add_argument("--input", required=True, help="an image file or a folder of images")
    s.add_argument("--output", required=True, help="output folder")
    add_sampling(s)
    s.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="samples per image; >1 also writes per-pixel mean and std (uncertainty)",
    )
    s.add_argument("--batch-size", type=int, default=8, help="images per batch (same-size images)")
    s.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels")
    s.add_argument(
        "--upscale",
        type=int,
        default=1,
        help="bicubic-upscale inputs by this factor first (for super-resolution models "
        "given low-resolution images)",
    )
    s.add_argument(
        "--noise-level",
        type=noise_level_arg,
        default=None,
        metavar="SIGMA|auto",
        help="for a denoiser trained with data.task.noise_map: the inputs' noise std on the "
        "0-255 scale (e.g. 25), given to the model as its noise-level map; 'auto' estimates "
        "it per image (Immerkær's operator; 8-bit Set12 at sigma 15 / 25 / 50 reads 15.5 / "
        "25.2 / 48.8 on average, fine texture reads higher) and writes the estimates to "
        "OUTPUT/noise-levels.csv",
    )
    s.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable file (default: report it, skip it, write the rest, "
        "exit 1)",
    )
    s.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance weight w >= 0 (torch engine; default: the run's "
        "sample.guidance, 0): sharper samples at the cost of calibration; needs a model "
        "trained with diffusion.cond_drop_prob > 0",
    )
    add_no_progress(s)
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from condiff.cli import EXIT_SOME_FAILED
    from condiff.infer.run import sample_files

    if a.num_samples < 1:
        raise ValueError("--num-samples must be >= 1")
    opts = dict(
        estimate=a.estimate,
        sampler=a.sampler,
        steps=a.steps,
        num_samples=a.num_samples,
        overlap=a.overlap,
    )
    if a.guidance is not None:
        if a.engine == "onnxruntime":
            raise ValueError("--guidance needs the torch engine (--checkpoint)")
        opts["guidance"] = a.guidance
    progress = not a.no_progress
    if a.engine == "onnxruntime":  # numpy and ONNX Runtime only: no torch imported
        from condiff.export.runtime import ort_engine

        engine, cc = ort_engine(a.model, seed=a.seed, progress=progress, **opts)
    else:
        from condiff.infer.run import torch_engine

        if a.checkpoint is None:
            raise ValueError("--checkpoint is required with the torch engine")
        engine, cc = torch_engine(
            a.checkpoint,
            device=a.device,
            dtype=a.dtype,
            seed=a.seed,
            progress=progress,
            **speed(a),
            **opts,
        )
    report = sample_files(
        engine,
        cc,
        a.input,
        a.output,
        batch_size=a.batch_size,
        upscale=a.upscale,
        progress=progress,
        strict=a.strict,
        noise_level=a.noise_level,
    )
    print(f"{report.summary()}\noutput: {a.output}")
    return EXIT_SOME_FAILED if report.skipped else 0
