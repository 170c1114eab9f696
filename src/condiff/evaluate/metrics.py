"""Image quality figures on [0, 1] images: PSNR, SSIM (scikit-image), MAE."""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB for (H, W, C) arrays in [0, 1]; identical images give +inf."""
    return float(peak_signal_noise_ratio(target, pred, data_range=1.0))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004, 7x7 window as scikit-image's default), channels averaged."""
    win = min(7, *target.shape[:2])
    win -= 1 - win % 2  # odd
    return float(structural_similarity(target, pred, data_range=1.0, channel_axis=2, win_size=win))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(pred.astype(np.float64) - target.astype(np.float64)).mean())


def all_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "mae": mae(pred, target)}
