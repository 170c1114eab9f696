"""Degradation tasks: make the condition from a clean target, on the fly.

Each task works on ``(C, H, W)`` tensors in [-1, 1], knows its condition's channel count, and
offers the simple baseline an evaluation compares against.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from condiff.config import TaskConfig, level_range
from condiff.data.io import noise_level_value


def resize_bicubic(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bicubic resize of (C, H, W) or (B, C, H, W), antialiased when shrinking."""
    batched = x.ndim == 4
    y = F.interpolate(
        x if batched else x[None], size=size, mode="bicubic", antialias=True, align_corners=False
    )
    return y if batched else y[0]


class Task:
    """Base: ``degrade(target, rng)`` -> condition; ``baseline(cond)`` -> a target estimate."""

    name = "task"

    def __init__(self, cfg: TaskConfig) -> None:
        self.cfg = cfg

    def cond_channels(self, target_channels: int) -> int:
        return target_channels

    def target_channels(self, color_channels: int) -> int:
        return color_channels

    def size_multiple(self) -> int:
        return 1

    def degrade(self, target: Tensor, rng: np.random.Generator) -> Tensor:
        raise NotImplementedError

    def baseline(self, cond: Tensor, target_channels: int) -> Tensor:
        return cond[:target_channels]


def quantize_8bit(x: Tensor) -> Tensor:
    """Round [-1, 1] values to the 256 levels of an 8-bit image (clipped first)."""
    return torch.round((x.clamp(-1, 1) + 1) * 127.5) / 127.5 - 1


class SuperResolution(Task):
    """Condition: bicubic downscale by ``factor`` (rounded to 8 bits, as a user's low-resolution
    file is), then bicubic upscale back to the target's size (SR3's setup)."""

    name = "super_resolution"

    def size_multiple(self) -> int:
        return self.cfg.factor

    def downscale(self, target: Tensor) -> Tensor:
        """The low-resolution image a user holds: ``(C, H/f, W/f)``."""
        _, h, w = target.shape[-3:]
        f = self.cfg.factor
        low = resize_bicubic(target, (h // f, w // f))
        return quantize_8bit(low) if self.cfg.quantize else low

    def upscale(self, low: Tensor) -> Tensor:
        """The condition the network sees: the low-resolution image, bicubic-upscaled."""
        _, h, w = low.shape[-3:]
        f = self.cfg.factor
        return resize_bicubic(low, (h * f, w * f)).clamp(-1, 1)

    def degrade(self, target: Tensor, rng: np.random.Generator) -> Tensor:
        return self.upscale(self.downscale(target))

    def baseline(self, cond: Tensor, target_channels: int) -> Tensor:
        return cond  # the bicubic upscale itself


def draw(level: float | tuple[float, float], rng: np.random.Generator, integer: bool = False):
    """A fixed level, or one drawn uniformly from ``[lo, hi]`` (inclusive for integers)."""
    lo, hi = level_range(level)
    if lo == hi:
        return lo
    return int(rng.integers(lo, hi + 1)) if integer else float(rng.uniform(lo, hi))


class Denoising(Task):
    """Condition: target + Gaussian noise of std ``sigma`` on the 0-255 scale (a fixed level, or
    one drawn per image from a range: a blind model); not clipped, as the field's protocol."""

    name = "denoising"

    def cond_channels(self, target_channels: int) -> int:
        return target_channels + (1 if self.cfg.noise_map else 0)

    def degrade(self, target: Tensor, rng: np.random.Generator) -> Tensor:
        sigma = draw(self.cfg.sigma, rng)
        noise = torch.from_numpy(rng.standard_normal(target.shape).astype(np.float32))
        noisy = target + (2 * sigma / 255) * noise  # [-1, 1] scale doubles the std
        return with_noise_map(noisy, sigma) if self.cfg.noise_map else noisy


def with_noise_map(noisy: Tensor, sigma: float) -> Tensor:
    """The noisy image with one more channel, its noise level (``noise_level_value(sigma)``
    everywhere; sigma on the 0-255 scale)."""
    level = torch.full_like(noisy[..., :1, :, :], noise_level_value(sigma))
    return torch.cat([noisy, level], dim=-3)


class Colorization(Task):
    """Condition: luma of the RGB target; target: RGB."""

    name = "colorization"

    def cond_channels(self, target_channels: int) -> int:
        return 1

    def target_channels(self, color_channels: int) -> int:
        return 3

    def degrade(self, target: Tensor, rng: np.random.Generator) -> Tensor:
        w = torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        return (target * w).sum(0, keepdim=True)

    def baseline(self, cond: Tensor, target_channels: int) -> Tensor:
        return cond.expand(target_channels, -1, -1)


class Inpainting(Task):
    """Condition: target with random rectangles set to 0, plus the mask (1 = known) as a channel."""

    name = "inpainting"

    def cond_channels(self, target_channels: int) -> int:
        return target_channels + 1

    def degrade(self, target: Tensor, rng: np.random.Generator) -> Tensor:
        _, h, w = target.shape
        mask = np.ones((h, w), dtype=np.float32)
        hidden, goal = 0.0, self.cfg.mask_fraction * h * w
        while hidden < goal:
            bh = int(rng.integers(max(1, h // 8), max(2, h // 2)))
            bw = int(rng.integers(max(1, w // 8), max(2, w // 2)))
            y, x = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            mask[y : y + bh, x : x + bw] = 0
            hidden = float((mask == 0).sum())
        m = torch.from_numpy(mask)[None]
        return torch.cat([target * m, m * 2 - 1])  # mask in [-1, 1] like every other channel

    def baseline(self, cond: Tensor, target_channels: int) -> Tensor:
        return cond[:target_channels]


class Jpeg(Task):
    """Condition: the target JPEG-compressed at ``quality`` (IJG, through Pillow; a fixed
    quality, or one drawn per image from a range). With ``grid_shift``, that fraction of images
    is encoded with the block grid off the corner: the image reflected by (dy, dx) pixels at its
    top and left, encoded, decoded and cut back."""

    name = "jpeg"

    def degrade(self, target: Tensor, rng: np.random.Generator) -> Tensor:
        quality = draw(self.cfg.quality, rng, integer=True)
        arr = np.round(((target.clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()).astype(
            np.uint8
        )
        dy = dx = 0
        if self.cfg.grid_shift and rng.random() < self.cfg.grid_shift:
            block = 16 if arr.shape[2] == 3 else 8  # 4:2:0 chroma: 16-pixel blocks
            dy, dx = (int(rng.integers(0, min(block, n))) for n in arr.shape[:2])
            arr = np.pad(arr, ((dy, 0), (dx, 0), (0, 0)), mode="reflect")
        out = jpeg_uint8(arr, quality)[dy:, dx:].astype(np.float32) / 127.5 - 1
        return torch.from_numpy(out).permute(2, 0, 1).contiguous()


def jpeg_uint8(arr: np.ndarray, quality: int) -> np.ndarray:
    """(H, W, C) uint8 (C 1 or 3) -> the same, encoded as baseline JPEG and decoded."""
    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf)).reshape(arr.shape)


TASKS: dict[str, type[Task]] = {
    t.name: t for t in (SuperResolution, Denoising, Colorization, Inpainting, Jpeg)
}


def make_task(cfg: TaskConfig) -> Task:
    return TASKS[cfg.name](cfg)
