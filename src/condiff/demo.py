"""``condiff demo``: the main job on the bundled photographs: train, sample held-out, report."""

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


def demo_config(device_type: str, output: str = "runs/demo") -> RunConfig:
    """4x super-resolution of gray photographs, the spec's 2 -> 1 channel layout, with the
    recipe of ``configs/sr4-gray.yaml`` (docs/NOTES.md, "Recipe study"): v on the residual over
    bicubic scaled by 4, zero terminal SNR, a fifth of the batch at the top timestep (the
    one-call posterior mean), 64-pixel crops in all 8 orientations, learning rate decayed to 0.

    CPU: the ``small`` preset, ~4 minutes on 2 cores. GPU: ``seed-default``.
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
    return RunConfig(
        model=ModelConfig.from_preset("small"),
        diffusion=diffusion,
        data=DataConfig(task=task, crop_size=64, val_count=3, rotate=True),
        train=TrainConfig(
            output_dir=output,
            steps=600,
            batch_size=16,
            lr=5e-4,
            warmup_steps=50,
            lr_schedule="cosine",
            ema_decay=0.995,
            log_every=50,
            val_every=300,
            image_every=300,
            ckpt_every=300,
            val_steps=20,
        ),
        sample=SampleConfig(),
    )


def run_demo(
    output: str = "runs/demo",
    *,
    device: str = "auto",
    steps: int | None = None,
    progress: bool = True,
) -> Path:
    from condiff.evaluate.run import evaluate_run
    from condiff.train import fit

    dev = resolve_device(device)
    cfg = demo_config(dev.type, output)
    cfg.train.device = str(dev)
    if steps is not None:
        cfg.train.steps = steps
    print(
        f"condiff demo on {dev}: preset {cfg.model.preset}, {cfg.train.steps} steps of "
        f"{cfg.train.batch_size} x {cfg.data.crop_size}px crops, 4x super-resolution of the bundled "
        f"photographs (held out: {cfg.data.val_count}); run folder {output}"
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
        num_samples=4,
        progress=progress,
    )
    out = report.out_dir
    assert out is not None
    print((out / "report.md").read_text())
    print("Files:")
    print(f"  report      {out / 'report.md'} (summary), {out / 'metrics.csv'} (per image)")
    print(f"  grids       {out / 'grids'} (bicubic | mean | sample | target | std of 4 samples)")
    print(f"  checkpoint  {result.checkpoint}")
    print(f"  logs        tensorboard --logdir {Path(output) / 'tb'}")
    return out
