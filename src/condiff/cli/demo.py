"""``condiff demo``: the main job on the bundled photographs: train, sample, report."""

from __future__ import annotations

import argparse

from condiff.cli.options import add_no_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "demo",
        help="train on the bundled photographs (4x super-resolution by default), "
        "sample the held-out ones, write a report",
        description="The main job: train on scikit-image's bundled photographs for "
        "a task (4x super-resolution by default; --task denoising or jpeg), gray, the spec's "
        "2->1 layout, sized for the machine (on a CPU: fine-tune the shipped BSD400-pretrained "
        "'small' model of the task; on a GPU: train 'seed-default' from scratch), then score "
        "the held-out photographs and write a report: the posterior mean, samples and (for sr) "
        "the shipped perceptual estimate against the input (bicubic, noisy, JPEG), grids, CSVs.",
    )
    s.add_argument(
        "--task",
        choices=["sr", "denoising", "jpeg"],
        default="sr",
        help="sr (default): 4x super-resolution; denoising: blind Gaussian denoising (noise std "
        "0-55 of 255); jpeg: blind JPEG artefact removal (quality 10-95)",
    )
    s.add_argument("--output", default="runs/demo", help="run folder (default: runs/demo)")
    s.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    s.add_argument("--steps", type=int, default=None, help="training steps (default: by device)")
    s.add_argument(
        "--from-scratch",
        action="store_true",
        help="CPU: train the small model from random weights (600 steps) instead of "
        "fine-tuning the shipped BSD400-pretrained one (200 steps)",
    )
    add_no_progress(s)
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from condiff.demo import run_demo

    run_demo(
        a.output,
        device=a.device,
        steps=a.steps,
        from_scratch=a.from_scratch,
        progress=not a.no_progress,
        task=a.task,
    )
    return 0
