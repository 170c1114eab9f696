"""Tiled network calls for images larger than the training window (MultiDiffusion-style).

The network runs on overlapping windows at *every* denoising step and the predictions are blended
with weights that ramp down linearly across the overlap, so the sampler sees one seamless image
and all windows share the same noise (Bar-Tal et al. 2023).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

ModelFn = Callable[[Tensor, Tensor], Tensor]


def tile_starts(length: int, window: int, overlap: int) -> list[int]:
    """Window starts covering ``[0, length)`` with at least ``overlap`` pixels shared; last flush."""
    if length <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return sorted(set(starts))


def blend_weights(window: int, overlap: int, device: torch.device) -> Tensor:
    """(window, window) weights: 1 in the middle, a linear ramp over ``overlap`` pixels at edges."""
    i = torch.arange(window, device=device, dtype=torch.float32)
    if overlap <= 0:
        ramp = torch.ones(window, device=device)
    else:
        ramp = torch.minimum((i + 1) / (overlap + 1), (window - i) / (overlap + 1)).clamp(max=1.0)
    return ramp[:, None] * ramp[None, :]


def pad_to_multiple(x: Tensor, multiple: int, min_size: int = 0) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) on the bottom/right so both sides divide by ``multiple``."""
    h, w = x.shape[-2:]
    h2 = max(-(-h // multiple) * multiple, min_size)
    w2 = max(-(-w // multiple) * multiple, min_size)
    if (h2, w2) == (h, w):
        return x, (h, w)
    mode = "reflect" if h2 - h < h and w2 - w < w else "replicate"
    return F.pad(x, (0, w2 - w, 0, h2 - h), mode=mode), (h, w)


class TiledModel:
    """Callable like the network, running it on overlapping ``window`` tiles when the input is larger."""

    def __init__(self, model: ModelFn, window: int, overlap: int, *, max_batch: int = 16) -> None:
        if not 0 <= overlap < window:
            raise ValueError(f"tile overlap must be in [0, window={window}), got {overlap}")
        self.model, self.window, self.overlap, self.max_batch = model, window, overlap, max_batch

    def needs_tiling(self, h: int, w: int) -> bool:
        return h > self.window or w > self.window

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        b, _, h, w = x.shape
        if not self.needs_tiling(h, w):
            return self.model(x, t)
        win = self.window
        ys, xs = tile_starts(h, win, self.overlap), tile_starts(w, win, self.overlap)
        wh = min(win, h)
        ww = min(win, w)
        weight = blend_weights(win, self.overlap, x.device)[:wh, :ww]
        coords = [(y, x0) for y in ys for x0 in xs]
        out: Tensor | None = None
        norm = torch.zeros(1, 1, h, w, device=x.device)
        for i in range(0, len(coords), max(1, self.max_batch // b)):
            chunk = coords[i : i + max(1, self.max_batch // b)]
            tiles = torch.cat(
                [x[:, :, y : y + wh, x0 : x0 + ww] for y, x0 in chunk]
            )  # (n*B, C, wh, ww)
            pred = self.model(tiles, t.repeat(len(chunk))).float()
            if out is None:
                out = torch.zeros(b, pred.shape[1], h, w, device=x.device)
            for j, (y, x0) in enumerate(chunk):
                out[:, :, y : y + wh, x0 : x0 + ww] += pred[j * b : (j + 1) * b] * weight
                norm[:, :, y : y + wh, x0 : x0 + ww] += weight
        assert out is not None
        return out / norm
