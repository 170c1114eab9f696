"""Option groups several commands share: sampling, speed, int8 calibration; and their readers."""

from __future__ import annotations

import argparse


def add_sampling(p: argparse.ArgumentParser) -> None:
    """--estimate, --sampler, --steps, --seed, --device, --dtype, and the speed options."""
    from condiff.diffusion.samplers import SAMPLERS

    p.add_argument(
        "--estimate",
        choices=["sample", "mean", "perceptual"],
        default="sample",
        help="sample (default): posterior samples, sharp and varied, calibrated (their spread "
        "is the uncertainty); mean: the posterior mean, the minimum-MSE estimate (highest PSNR, "
        "smoother): one network call, or the average of --num-samples samples; perceptual: "
        "one call of a perceptual stage's generator, trained for realism (sharpest per call, "
        "not a posterior sample; only for runs with a perceptual stage)",
    )
    p.add_argument(
        "--sampler",
        choices=sorted(SAMPLERS),
        default=None,
        help="sampler (default: the run's sample.sampler, dpmpp_2m)",
    )
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's, 20)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same samples)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    add_dtype(p)
    add_speed(p)


def add_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="network precision (default: bf16 on CUDA, fp32 on CPU)",
    )


def add_speed(p: argparse.ArgumentParser) -> None:
    """--no-compile / --compile, --no-graphs, --attention."""
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--no-compile",
        action="store_true",
        help="do not torch.compile the network (compiled by default on CUDA)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network on a CPU too (see `condiff bench --cpu-deploy`)",
    )
    p.add_argument(
        "--no-graphs",
        action="store_true",
        help="do not capture the sampling loop in a CUDA graph (on by default on CUDA)",
    )
    p.add_argument(
        "--attention",
        choices=["auto", "sdpa", "sdpa-flash", "sdpa-safe", "triton"],
        default="auto",
        help="attention kernel: condiff's fused Triton kernel for small heads (on CUDA), "
        "PyTorch's SDPA, SDPA kept off its cuDNN backend (sdpa-flash), or off it only where "
        "the token count is not a multiple of 128 (sdpa-safe), or auto (default: "
        "Triton where it is installed and CUDA is present)",
    )


def speed(a: argparse.Namespace) -> dict:
    """The speed options as keyword arguments: compile (None: the device's default), graphs."""
    compile_ = True if a.compile else False if a.no_compile else None
    return {"compile": compile_, "graphs": False if a.no_graphs else None}


def add_int8(p: argparse.ArgumentParser, note: str = "") -> None:
    """The int8 calibration and gate options (``condiff quantize``, ``bench --cpu-deploy``)."""
    p.add_argument("--calib-images", type=int, default=4, help=f"{note}calibration images")
    p.add_argument(
        "--calib-steps", type=int, default=10, help=f"{note}sampler steps recorded per image"
    )
    p.add_argument("--gate-steps", type=int, default=20, help=f"{note}sampler steps for the gate")
    p.add_argument(
        "--max-side", type=int, default=128, help=f"{note}center-crop images to this side"
    )


def int8(a: argparse.Namespace) -> dict:
    return {
        "calib_images": a.calib_images,
        "calib_steps": a.calib_steps,
        "gate_steps": a.gate_steps,
        "max_side": a.max_side,
    }


def add_no_progress(p: argparse.ArgumentParser, what: str = "no progress bars") -> None:
    p.add_argument("--no-progress", action="store_true", help=what)


def parse_size(text: str, flag: str) -> tuple[int, int]:
    """``HxW`` or ``N`` (square) -> (H, W); a bad value is a ValueError naming ``flag``."""
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise ValueError(f"{flag} expects HxW or N in pixels (e.g. 256x256), got {text!r}")
    return h, w
