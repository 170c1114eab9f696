"""``condiff sample``: files in, files out (names kept), with optional uncertainty maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from condiff.data.io import ImageError, list_images, probe_image, read_image, to_model, write_image
from condiff.data.tasks import resize_bicubic
from condiff.infer.pipeline import load, resolve_device

STD_SCALE = 4.0  # the std map image shows 4 x std (std 0.25 of the [0, 1] range -> white)


def default_dtype(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def sample_files(
    checkpoint: str | Path | None,
    input_path: str | Path,
    output_dir: str | Path,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    num_samples: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "auto",
    dtype: str | None = None,
    overlap: int | None = None,
    upscale: int = 1,
    progress: bool = True,
    compile: bool | None = None,
    graphs: bool | None = None,
    engine: str = "torch",
    onnx_model: str | Path | None = None,
) -> list[Path]:
    """Sample every image under ``input_path`` into ``output_dir``; returns the files written.

    Noise for batch ``i`` comes from a generator seeded with ``seed + i``.
    """
    if num_samples < 1 or batch_size < 1 or upscale < 1:
        raise ValueError("--num-samples, --batch-size and --upscale must be >= 1")
    dev = resolve_device(device)
    if engine == "onnxruntime":
        from condiff.export.onnx import load_onnx

        if onnx_model is None:
            raise ValueError("--engine onnxruntime needs --model FILE.onnx (from condiff export)")
        pipe = load_onnx(onnx_model)
        dev = pipe.device
    elif engine != "torch":
        raise ValueError(f"unknown engine {engine!r}; expected 'torch' or 'onnxruntime'")
    else:
        if checkpoint is None:
            raise ValueError("--checkpoint is required with the torch engine")
        pipe = load(
            checkpoint,
            device=dev,
            dtype=dtype or default_dtype(dev),
            compile=compile,
            graphs=graphs,
        )
    inp, out = Path(input_path), Path(output_dir)
    files = [inp] if inp.is_file() else list_images(inp)
    if not files:
        raise ImageError(f"no images found in {inp}")
    cc = pipe.cond_channels
    if cc not in (1, 3):
        raise ValueError(
            f"this model's condition has {cc} channels; condiff sample reads gray (1) or RGB (3) "
            "images; use the Python API (condiff.load) for other layouts"
        )
    color = "gray" if cc == 1 else "rgb"
    infos = {p: probe_image(p) for p in files}  # corrupt files fail here, by name
    by_size: dict[tuple[int, int], list[Path]] = {}
    for p, info in infos.items():
        by_size.setdefault((info.height, info.width), []).append(p)
    batches = [
        group[i : i + batch_size]
        for group in by_size.values()
        for i in range(0, len(group), batch_size)
    ]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(files), desc="sample", unit="img")
    written: list[Path] = []
    for bi, batch in enumerate(batches):
        conds = []
        for p in batch:
            c = to_model(read_image(p, color)[0])
            if upscale > 1:
                c = resize_bicubic(c, (c.shape[1] * upscale, c.shape[2] * upscale)).clamp(-1, 1)
            conds.append(c)
        gen = torch.Generator(dev).manual_seed(seed + bi)
        res = pipe(
            torch.stack(conds),
            sampler=sampler,
            steps=steps,
            num_samples=num_samples,
            generator=gen,
            overlap=overlap,
            progress=progress,
        )
        if num_samples == 1:
            res = res[:, None]
        for p, samples in zip(batch, res, strict=True):
            written += write_samples(out, p, samples, infos[p].bit_depth)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    return written


def write_samples(out: Path, src: Path, samples: torch.Tensor, bit_depth: int) -> list[Path]:
    """``samples`` (K, C, H, W) in [-1, 1]. K=1: ``<name>.png``; K>1 adds samples, mean, std."""
    ext = ".tif" if bit_depth == 16 else ".png"
    arr = ((samples.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy()  # (K, H, W, C)
    paths = [write_image(out / f"{src.stem}{ext}", arr[0], bit_depth)]
    if len(arr) > 1:
        for k in range(1, len(arr)):
            paths.append(write_image(out / f"{src.stem}_sample{k}{ext}", arr[k], bit_depth))
        mean, std = uncertainty(arr)
        paths.append(write_image(out / f"{src.stem}_mean{ext}", mean, bit_depth))
        paths.append(write_image(out / f"{src.stem}_std.png", np.clip(std * STD_SCALE, 0, 1)))
        npz = out / f"{src.stem}_uncertainty.npz"
        np.savez_compressed(npz, mean=mean, std=std)
        paths.append(npz)
    return paths


def uncertainty(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel mean and (population) standard deviation over the first axis, float32."""
    s = samples.astype(np.float64)
    return s.mean(0).astype(np.float32), s.std(0).astype(np.float32)
