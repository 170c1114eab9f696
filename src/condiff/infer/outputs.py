"""Sample files on disk: names kept, 16-bit in -> 16-bit out, uncertainty maps (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condiff.data.io import write_image

STD_SCALE = 4.0  # the std map image shows 4 x std (std 0.25 of the [0, 1] range -> white)


class NonFiniteOutput(ValueError):
    """The model's output holds NaN or Inf: refused, never written or returned as an image."""


def refuse_nonfinite(bad: int, where: str = "") -> None:
    """Raise :class:`NonFiniteOutput` if ``bad`` (the count of NaN/Inf values) is not 0."""
    if bad:
        raise NonFiniteOutput(
            f"{where}the model's output has {bad} NaN/Inf values; nothing written or returned "
            "for it (the checkpoint's weights may be damaged)"
        )


def write_samples(out: Path, src: Path, samples: np.ndarray, bit_depth: int) -> list[Path]:
    """``samples`` (K, C, H, W) in [-1, 1]. K=1: ``<name>.png``; K>1 adds samples, mean, std.
    (Output with NaN or Inf never gets here: both pipelines refuse it where it is made.)"""
    ext = ".tif" if bit_depth == 16 else ".png"
    arr = ((np.clip(samples.astype(np.float32), -1, 1) + 1) / 2).transpose(0, 2, 3, 1)  # K,H,W,C
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
