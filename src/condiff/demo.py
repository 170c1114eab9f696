"""``condiff demo``: the main job on the bundled photographs: train, sample held-out, report.

On a CPU it fine-tunes condiff's shipped BSD400-pretrained ``small`` model for the task
(``pretrained:sr4-gray-small``, ``denoise-gray-small`` or ``jpeg-gray-small``; see
``condiff/weights/NAME/README.md``) on scikit-image's photographs for a few hundred steps;
``--from-scratch`` trains it from random weights instead. On a GPU it trains the spec's
``seed-default`` network from scratch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from condiff.config import (
    DataConfig,
    DiffusionConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TaskConfig,
    TrainConfig,
)
from condiff.infer.pipeline import resolve_device


@dataclass(frozen=True)
class DemoTask:
    """One task the demo can run: its degradation, the recipe's target scale, shipped weights."""

    task: TaskConfig
    target_scale: float  # about 0.5 / the residual's std (configs/*-gray.yaml)
    pretrained: str
    baseline: str  # what the report's input row is
    # shipped weights of a perceptual stage (its generator answers estimate="perceptual")
    perceptual: str | None = None


DEMO_TASKS = {
    "sr": DemoTask(
        TaskConfig(name="super_resolution", factor=4),
        4.0,
        "pretrained:sr4-gray-small",
        "bicubic",
        "pretrained:sr4-gray-small-perceptual",
    ),
    "denoising": DemoTask(
        TaskConfig(name="denoising", sigma=(0.0, 55.0)),
        3.0,
        "pretrained:denoise-gray-small",
        "the noisy input",
    ),
    "jpeg": DemoTask(
        TaskConfig(name="jpeg", quality=(10, 95)),
        8.0,
        "pretrained:jpeg-gray-small",
        "the JPEG input",
    ),
}
PRETRAINED = DEMO_TASKS["sr"].pretrained


def demo_config(
    device_type: str, output: str = "runs/demo", from_scratch: bool = False, task: str = "sr"
) -> RunConfig:
    """The task on gray photographs, the spec's 2 -> 1 channel layout, with the recipe of
    ``configs/sr4-gray.yaml`` (docs/NOTES.md, "Recipe study"): v on the residual over the input
    (scaled by the task's target scale), zero terminal SNR, a fifth of the batch at the top
    timestep (the one-call posterior mean), 64-pixel crops in all 8 orientations, learning rate
    decayed to 0.

    CPU: the ``small`` preset, fine-tuned from the shipped BSD400 weights for 200 steps (about
    2 minutes on 2 cores), or trained from scratch for 600. GPU: ``seed-default`` from scratch.
    """
    if task not in DEMO_TASKS:
        raise ValueError(f"--task must be one of {sorted(DEMO_TASKS)}, got {task!r}")
    t = DEMO_TASKS[task]
    diffusion = DiffusionConfig(
        rescale_zero_terminal_snr=True,
        objective="v",
        residual=True,
        target_scale=t.target_scale,
        top_t_fraction=0.2,
    )
    if device_type == "cuda":
        return RunConfig(
            model=ModelConfig.from_preset("seed-default", dropout_rate=0.0),
            diffusion=diffusion,
            data=DataConfig(task=t.task, crop_size=64, val_count=3, rotate=True, num_workers=8),
            train=TrainConfig(
                output_dir=output,
                steps=1700,
                batch_size=128,
                lr=5e-4,
                warmup_steps=150,
                lr_schedule="cosine",
                ema_decay=0.995,
                compile=False,
                log_every=50,
                val_every=850,
                image_every=850,
                ckpt_every=850,
            ),
            sample=SampleConfig(),
        )
    tune = not from_scratch
    every = 100 if tune else 300
    return RunConfig(
        model=ModelConfig.from_preset("small"),
        diffusion=diffusion,
        data=DataConfig(task=t.task, crop_size=64, val_count=3, rotate=True),
        train=TrainConfig(
            output_dir=output,
            steps=200 if tune else 600,
            batch_size=16,
            lr=2e-4 if tune else 5e-4,
            warmup_steps=20 if tune else 50,
            lr_schedule="cosine",
            ema_decay=0.99 if tune else 0.995,
            log_every=50,
            val_every=every,
            image_every=every,
            ckpt_every=every,
            val_steps=20,
            init_from=t.pretrained if tune else None,
        ),
        sample=SampleConfig(),
    )


def run_demo(
    output: str = "runs/demo",
    *,
    device: str = "auto",
    steps: int | None = None,
    from_scratch: bool = False,
    progress: bool = True,
    task: str = "sr",
) -> Path:
    from condiff.evaluate.run import evaluate_run
    from condiff.train import fit

    t_start = time.perf_counter()
    dev = resolve_device(device)
    cfg = demo_config(dev.type, output, from_scratch=from_scratch, task=task)
    cfg.train.device = str(dev)
    if steps is not None:
        cfg.train.steps = steps
    origin = (
        f"fine-tuned from condiff's BSD400-pretrained {cfg.model.preset} model "
        f"({cfg.train.init_from})"
        if cfg.train.init_from
        else "trained from scratch"
    )
    what = {
        "sr": "4x super-resolution",
        "denoising": "blind denoising (noise std 0-55)",
        "jpeg": "blind JPEG artefact removal (quality 10-95)",
    }[task]
    print(
        f"condiff demo on {dev}: the {cfg.model.preset} preset {origin}, {cfg.train.steps} "
        f"steps of {cfg.train.batch_size} x {cfg.data.crop_size}px crops, {what} of the bundled "
        f"photographs (held out: {cfg.data.val_count}); run folder {output}"
    )
    t0 = time.perf_counter()
    result = fit(cfg, resume="auto", progress=progress)  # re-running continues a finished run
    print(
        f"trained to step {result.step} in {time.perf_counter() - t0:.0f} s; sampling the "
        "held-out photographs ..."
    )
    perceptual = _attach_perceptual(cfg, result, DEMO_TASKS[task])
    report = evaluate_run(
        result.run_dir,
        out_dir=Path(output) / "report",
        device=str(dev),
        max_side=256 if dev.type == "cpu" else 512,
        num_samples=4,  # adds the mean of 4 samples and a std map to the grids
        metrics=["lpips"],  # DISTS (VGG16) would add a minute on a CPU; `condiff evaluate` has it
        progress=progress,
    )
    _summary(report, cfg, origin, result, DEMO_TASKS[task].baseline, output, t_start, perceptual)
    assert report.out_dir is not None
    return report.out_dir


def _attach_perceptual(cfg: RunConfig, result, task: DemoTask) -> str | None:
    """Put the shipped perceptual generator of the demo's network into the trained checkpoint,
    so the report shows the perceptual estimate beside the mean and the samples. The generator
    is a network of its own (the same inputs as the mean's call), trained on BSD400 by a
    perceptual stage; the demo does not fine-tune it (a GAN stage needs a GPU's minutes)."""
    if (
        task.perceptual is None
        or cfg.train.init_from != task.pretrained
        or result.checkpoint is None
    ):
        return None
    from condiff import checkpoint as ckpt

    shipped = ckpt.resolve_checkpoint(task.perceptual, need_state=False)
    ckpt.add_weights(
        result.checkpoint,
        "perceptual.safetensors",
        ckpt.read_weights(shipped / "perceptual.safetensors"),
    )
    return task.perceptual


def _summary(report, cfg, origin, result, baseline, output, t_start, perceptual=None) -> None:
    from condiff.evaluate.report import grid_caption

    out = report.out_dir
    means = {m["method"]: m for m in report.means()}
    gain = means["mean"]["psnr"] - means["baseline"]["psnr"]
    note = (
        f"\nThe model: the {cfg.model.preset} preset, {origin}, {result.step} steps on the bundled "
        f"photographs. Its posterior mean is {gain:+.2f} dB against {baseline} on the held-out "
        "ones.\n"
    )
    if perceptual and "perceptual" in means:
        p = means["perceptual"]
        note += (
            f"The perceptual estimate (one network call) is the generator shipped as {perceptual}: "
            "a perceptual stage (L1 + VGG16 features + GAN) on BSD400, not fine-tuned here. "
            f"PSNR {p['psnr']:.2f} dB"
            + (f", LPIPS {p['lpips']:.3f}" if "lpips" in p else "")
            + " (the sharpest per call; not a posterior sample: no uncertainty from it).\n"
        )
    (out / "report.md").write_text((out / "report.md").read_text() + note)
    print((out / "report.md").read_text())
    print(f"demo: {time.perf_counter() - t_start:.0f} s end to end")
    print("Files:")
    print(f"  report      {out / 'report.md'} (summary), {out / 'metrics.csv'} (per image)")
    print(f"  grids       {out / 'grids'} ({grid_caption(report, has_baseline=True)})")
    print(f"  checkpoint  {result.checkpoint}")
    print(f"  logs        tensorboard --logdir {Path(output) / 'tb'}")
