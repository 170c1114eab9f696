"""``condiff bench --train-loop``: ``condiff train``'s own loop timed beside the bare step."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from condiff.bench.rows import BenchRow

TRAIN_LOOP = "condiff train loop (data, EMA, logging)"  # the variant name of its row


def photos_at_least(dest: Path, size: int, color: str) -> Path:
    """The bundled photographs as PNG files in ``dest``, enlarged (bicubic) where a side is
    shorter than ``size``, so every preset's native crop fits."""
    from PIL import Image

    from condiff.data import export_bundled

    for path in export_bundled(dest, color):
        with Image.open(path) as im:
            w, h = im.size
            if min(w, h) < size:
                f = size / min(w, h)
                im.resize((max(size, round(w * f)), max(size, round(h * f))), Image.BICUBIC).save(
                    path
                )
    return dest


def bench_train_loop(
    preset: str, device: torch.device, *, size: int, batch: int, window: int
) -> BenchRow:
    """``condiff train``'s own loop (4x super-resolution crops read from PNG files by loader
    workers, EMA, gradient clipping, the one host sync per step, TensorBoard logging) with the
    defaults a run gets on this device (on CUDA: bf16, channels_last, torch.compile, fused AdamW,
    attention "auto"). img/s over the last of three ``window``-step log windows (the first holds
    start-up and compilation). Images and the run live in a temporary folder."""
    from condiff.config import DataConfig, ModelConfig, RunConfig, TaskConfig, TrainConfig
    from condiff.train import fit

    row = BenchRow(preset, TRAIN_LOOP, train_batch=batch)
    model = ModelConfig.from_preset(preset, dropout_rate=0.0)
    if model.in_img_channels != 2 * model.out_img_channels or size % 4:
        row.note = "skipped: needs in = 2 x out channels and a size divisible by 4"
        return row
    color = "gray" if model.out_img_channels == 1 else "rgb"
    work_dir = Path(tempfile.mkdtemp(prefix="condiff-bench-"))
    cfg = RunConfig(
        model=model,
        data=DataConfig(
            root=str(photos_at_least(work_dir / f"photos-{color}-{size}", size, color)),
            task=TaskConfig(name="super_resolution", factor=4),
            color=color,
            crop_size=size,
            val_count=1,
            num_workers=min(6, os.cpu_count() or 1) if device.type == "cuda" else 0,
        ),
        train=TrainConfig(
            output_dir=str(work_dir / f"run-{preset}"),
            steps=3 * window,
            batch_size=batch,
            log_every=window,
            val_every=10**9,
            image_every=10**9,
            ckpt_every=10**9,
            device=str(device),
        ),
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        result = fit(cfg, progress=False)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    rates = [h["img_per_s"] for h in result.history if "img_per_s" in h]
    row.train_img_s = rates[-1]
    if device.type == "cuda":
        row.peak_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def loop_vs_bare(rows: list[BenchRow], device: torch.device) -> list[str]:
    """For each train-loop row: its img/s over the bare step of the row run with the same defaults
    (on CUDA the optimised row with the kernel "auto" picks; on CPU eager fp32)."""
    from condiff.nn.attention import triton_available

    lines = []
    for r in rows:
        if r.variant != TRAIN_LOOP or not r.train_img_s:
            continue
        if device.type == "cuda":
            want = "optimised, triton" if triton_available() else "optimised (bf16"
        else:
            want = "eager fp32"
        bare = next((b for b in rows if b.preset == r.preset and b.variant.startswith(want)), None)
        if bare is not None and bare.train_img_s:
            lines.append(
                f"{r.preset}: condiff train loop {r.train_img_s:.1f} img/s = "
                f"{100 * r.train_img_s / bare.train_img_s:.1f}% of the bare step "
                f"({bare.variant}: {bare.train_img_s:.1f} img/s)"
            )
    return lines
