"""Image quality figures.

On [0, 1] images: PSNR, SSIM (scikit-image's default 7x7 window), MAE. On the 0-255 scale, as
the field's tables compute them: PSNR, SSIM with Wang et al.'s settings (11x11 Gaussian window,
sigma 1.5, over the valid windows: MATLAB's ``ssim``), PSNR-B (Yim & Bovik 2011), and BT.601
YCbCr with MATLAB's ``rgb2ycbcr`` conventions.
"""

from __future__ import annotations

import numpy as np

# scikit-image is imported where PSNR and SSIM are computed: its metrics pull in scipy.stats
# (0.6 s), which every training run would otherwise pay at start-up for a validation minutes later.


def psnr(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR in dB for (H, W, C) arrays in [0, 1]; identical images give +inf."""
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(target, pred, data_range=1.0))


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004, 7x7 window as scikit-image's default), channels averaged."""
    win = min(7, *target.shape[:2])
    win -= 1 - win % 2  # odd
    from skimage.metrics import structural_similarity

    return float(structural_similarity(target, pred, data_range=1.0, channel_axis=2, win_size=win))


def mae(pred: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(pred.astype(np.float64) - target.astype(np.float64)).mean())


def all_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {pred.shape} and target {target.shape} differ in shape")
    return {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "mae": mae(pred, target)}


# --- the field's conventions (0-255) -----------------------------------------------------------


def ycbcr(x: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> (H, W, 3) Y, Cb, Cr of ITU-R BT.601 on the 0-255 scale (float64).

    Gray (C = 1) is R = G = B: Y = 16 + 219 x, Cb = Cr = 128.
    """
    x = x.astype(np.float64)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    m = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
    return x @ m.T + np.array([16.0, 128.0, 128.0])


def rgb_to_y(x: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> (H, W) Y on the 0-255 scale (16-235)."""
    return ycbcr(x)[:, :, 0]


def y_uint8(rgb: np.ndarray) -> np.ndarray:
    """The Y channel MATLAB's ``rgb2ycbcr`` gives for an 8-bit RGB image: (H, W) uint8."""
    return np.round(rgb_to_y(rgb)).clip(0, 255).astype(np.uint8)


def shave(x: np.ndarray, border: int) -> np.ndarray:
    return x[border:-border, border:-border] if border > 0 else x


def psnr_255(pred: np.ndarray, target: np.ndarray) -> float:
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim_255(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM of two (H, W) images on the 0-255 scale, Wang et al. 2004's settings."""
    from skimage.metrics import structural_similarity

    return float(
        structural_similarity(
            target,
            pred,
            data_range=255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def ssim_255_channels(pred: np.ndarray, target: np.ndarray) -> float:
    """:func:`ssim_255` of (H, W, C) images, averaged over channels."""
    return float(np.mean([ssim_255(pred[..., c], target[..., c]) for c in range(pred.shape[2])]))


def blocking_effect_factor(x: np.ndarray, block: int = 8) -> float:
    """BEF of an (H, W) image on [0, 1] (Yim & Bovik 2011): how much larger the squared jumps
    across 8x8 block boundaries are than those inside blocks, weighted by log2(B)/log2(min side)."""
    h, w = x.shape
    dh = (x[:, :-1] - x[:, 1:]) ** 2  # horizontal neighbours, (H, W-1): column j vs j+1
    dv = (x[:-1, :] - x[1:, :]) ** 2
    on_h = (np.arange(w - 1) % block) == block - 1
    on_v = (np.arange(h - 1) % block) == block - 1
    n_bh, n_bv = h * (w // block - 1), w * (h // block - 1)
    boundary = (dh[:, on_h].sum() + dv[on_v, :].sum()) / (n_bh + n_bv)
    n_nh, n_nv = h * (w - 1) - n_bh, w * (h - 1) - n_bv
    inside = (dh[:, ~on_h].sum() + dv[~on_v, :].sum()) / (n_nh + n_nv)
    if boundary <= inside:
        return 0.0
    return float(np.log2(block) / np.log2(min(h, w)) * (boundary - inside))


def psnr_b(pred: np.ndarray, target: np.ndarray) -> float:
    """PSNR-B of (H, W) images on the 0-255 scale: PSNR with the estimate's blocking effect
    factor added to the MSE (Yim & Bovik 2011), as the JPEG-artefact papers report it."""
    p, t = pred.astype(np.float64) / 255, target.astype(np.float64) / 255
    mse = float(np.mean((p - t) ** 2)) + blocking_effect_factor(p)
    return float("inf") if mse == 0 else float(10 * np.log10(1 / mse))
