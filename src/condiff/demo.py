"""``condiff demo``: the main job on the bundled photographs: train, sample held-out, report.

On a CPU it fine-tunes condiff's shipped BSD400-pretrained ``small`` model (``pretrained:
sr4-gray-small``, see ``condiff/weights/sr4-gray-small/README.md``) on scikit-image's
photographs for a few hundred steps; ``--from-scratch`` trains it from random weights instead.
On a GPU it trains the spec's ``seed-default`` network from scratch.
"""

from __future__ import annotations

import time
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

PRETRAINED = "pretrained:sr4-gray-small"


def demo_config(
    device_type: str, output: str = "runs/demo", from_scratch: bool = False
) -> RunConfig:
    """4x super-resolution of gray photographs, the spec's 2 -> 1 channel layout, with the
    recipe of ``configs/sr4-gray.yaml`` (docs/NOTES.md, "Recipe study"): v on the residual over
    bicubic scaled by 4, zero terminal SNR, a fifth of the batch at the top timestep (the
    one-call posterior mean), 64-pixel crops in all 8 orientations, learning rate decayed to 0.

    CPU: the ``small`` preset, fine-tuned from the shipped BSD400 weights for 200 steps (about
    2 minutes on 2 cores), or trained from scratch for 600. GPU: ``seed-default`` from scratch.
    """
    diffusion = DiffusionConfig(
        rescale_zero_terminal_snr=True,
        objective="v",
        residual=True,
        target_scale=4.0,
        top_t_fraction=0.2,
    )
    task = TaskConfig(name="super_resolution", factor=4)
    if device_type == "cuda":
        return RunConfig(
            model=ModelConfig.from_preset("seed-default", dropout_rate=0.0),
            diffusion=diffusion,
            data=DataConfig(task=task, crop_size=64, val_count=3, rotate=True, num_workers=8),
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
    return RunConfig(
        model=ModelConfig.from_preset("small"),
        diffusion=diffusion,
        data=DataConfig(task=task, crop_size=64, val_count=3, rotate=True),
        train=TrainConfig(
            output_dir=output,
            steps=200 if tune else 600,
            batch_size=16,
            lr=2e-4 if tune else 5e-4,
            warmup_steps=20 if tune else 50,
            lr_schedule="cosine",
            ema_decay=0.99 if tune else 0.995,
            log_every=50,
            val_every=100 if tune else 300,
            image_every=100 if tune else 300,
            ckpt_every=100 if tune else 300,
            val_steps=20,
            init_from=PRETRAINED if tune else None,
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
) -> Path:
    from condiff.evaluate.report import grid_caption
    from condiff.evaluate.run import evaluate_run
    from condiff.train import fit

    t_start = time.perf_counter()
    dev = resolve_device(device)
    cfg = demo_config(dev.type, output, from_scratch=from_scratch)
    cfg.train.device = str(dev)
    if steps is not None:
        cfg.train.steps = steps
    origin = (
        f"fine-tuned from condiff's BSD400-pretrained {cfg.model.preset} model "
        f"({cfg.train.init_from})"
        if cfg.train.init_from
        else "trained from scratch"
    )
    print(
        f"condiff demo on {dev}: the {cfg.model.preset} preset {origin}, {cfg.train.steps} "
        f"steps of {cfg.train.batch_size} x {cfg.data.crop_size}px crops, 4x super-resolution of the bundled photographs (held "
        f"out: {cfg.data.val_count}); run folder {output}"
    )
    t0 = time.perf_counter()
    result = fit(cfg, resume="auto", progress=progress)  # re-running continues a finished run
    t_train = time.perf_counter() - t0
    print(
        f"trained to step {result.step} in {t_train:.0f} s; sampling the held-out photographs ..."
    )
    report = evaluate_run(
        result.run_dir,
        out_dir=Path(output) / "report",
        device=str(dev),
        max_side=256 if dev.type == "cpu" else 512,
        num_samples=4,  # adds the mean of 4 samples and a std map to the grids
        progress=progress,
    )
    out = report.out_dir
    assert out is not None
    means = {m["method"]: m for m in report.means()}
    gain = means["mean"]["psnr"] - means["baseline"]["psnr"]
    note = (
        f"\nThe model: the {cfg.model.preset} preset, {origin}, {result.step} steps on the bundled "
        f"photographs. Its posterior mean is {gain:+.2f} dB against bicubic on the held-out ones.\n"
    )
    (out / "report.md").write_text((out / "report.md").read_text() + note)
    print((out / "report.md").read_text())
    print(f"demo: {time.perf_counter() - t_start:.0f} s end to end")
    print("Files:")
    print(f"  report      {out / 'report.md'} (summary), {out / 'metrics.csv'} (per image)")
    print(f"  grids       {out / 'grids'} ({grid_caption(report, has_baseline=True)})")
    print(f"  checkpoint  {result.checkpoint}")
    print(f"  logs        tensorboard --logdir {Path(output) / 'tb'}")
    return out
