"""Tiled network calls for images larger than the training window (MultiDiffusion-style).

The network runs on overlapping windows at *every* denoising step and the predictions are blended
with weights that ramp down linearly across the overlap, so the sampler sees one seamless image
and all windows share the same noise (Bar-Tal et al. 2023).

Works on torch tensors and on numpy arrays (the ONNX Runtime engine runs without torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Array = Any  # a torch.Tensor or a numpy.ndarray
ModelFn = Callable[[Array, Array], Array]


def tile_starts(length: int, window: int, overlap: int) -> list[int]:
    """Window starts covering ``[0, length)`` with at least ``overlap`` pixels shared; last flush."""
    if length <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, length - window, stride))
    starts.append(length - window)
    return sorted(set(starts))


def _blend(i: Array, window: int, overlap: int, minimum: Callable) -> Array:
    """Weights from ``i = arange(window)`` (numpy or torch, float32): the ramp, outer product."""
    if overlap <= 0:
        ramp = i * 0 + 1
    else:
        ramp = minimum((i + 1) / (overlap + 1), (window - i) / (overlap + 1)).clip(max=1.0)
    return ramp[:, None] * ramp[None, :]


def blend_weights_np(window: int, overlap: int) -> np.ndarray:
    """(window, window) float32 weights: 1 in the middle, a linear ramp over ``overlap`` pixels."""
    return _blend(np.arange(window, dtype=np.float32), window, overlap, np.minimum)


def blend_weights(window: int, overlap: int, device: Any) -> Array:
    """:func:`blend_weights_np` as a torch tensor, built on ``device`` (no host-to-device copy, so
    it can run inside CUDA-graph capture)."""
    import torch

    i = torch.arange(window, dtype=torch.float32, device=device)
    return _blend(i, window, overlap, torch.minimum)


def pad_to_multiple(x: Array, multiple: int, min_size: int = 0) -> tuple[Array, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) on the bottom/right so both sides divide by ``multiple``."""
    h, w = x.shape[-2:]
    h2 = max(-(-h // multiple) * multiple, min_size)
    w2 = max(-(-w // multiple) * multiple, min_size)
    if (h2, w2) == (h, w):
        return x, (h, w)
    reflect = h2 - h < h and w2 - w < w
    if isinstance(x, np.ndarray):
        pad = ((0, 0), (0, 0), (0, h2 - h), (0, w2 - w))
        return np.pad(x, pad, mode="reflect" if reflect else "edge"), (h, w)
    import torch.nn.functional as F

    return F.pad(x, (0, w2 - w, 0, h2 - h), mode="reflect" if reflect else "replicate"), (h, w)


class TiledModel:
    """Callable like the network, running it on overlapping ``window`` tiles when the input is larger."""

    def __init__(self, model: ModelFn, window: int, overlap: int, *, max_batch: int = 16) -> None:
        if not 0 <= overlap < window:
            raise ValueError(f"tile overlap must be in [0, window={window}), got {overlap}")
        self.model, self.window, self.overlap, self.max_batch = model, window, overlap, max_batch
        # called as on_chunk(tiles done, tiles) after each chunk (progress, cancellation)
        self.on_chunk: Callable[[int, int], None] | None = None

    def needs_tiling(self, h: int, w: int) -> bool:
        return h > self.window or w > self.window

    def __call__(self, x: Array, t: Array) -> Array:
        b, _, h, w = x.shape
        if not self.needs_tiling(h, w):
            return self.model(x, t)
        numpy = isinstance(x, np.ndarray)
        if numpy:
            zeros = lambda *shape: np.zeros(shape, dtype=np.float32)  # noqa: E731
            cat, tile_t = np.concatenate, (lambda n: np.tile(t, n))
        else:
            import torch

            zeros = lambda *shape: torch.zeros(shape, device=x.device)  # noqa: E731
            cat, tile_t = torch.cat, t.repeat
        win = self.window
        ys, xs = tile_starts(h, win, self.overlap), tile_starts(w, win, self.overlap)
        wh = min(win, h)
        ww = min(win, w)
        weight = (
            blend_weights_np(win, self.overlap)
            if numpy
            else blend_weights(win, self.overlap, x.device)
        )[:wh, :ww]
        coords = [(y, x0) for y in ys for x0 in xs]
        out: Array | None = None
        norm = zeros(1, 1, h, w)
        # Chunks of equal size (the last one padded with repeats of its last tile, whose
        # predictions are dropped): one input shape, so one compiled graph per image size.
        cap = max(1, self.max_batch // b)
        per_call = -(-len(coords) // -(-len(coords) // cap))
        for i in range(0, len(coords), per_call):
            chunk = coords[i : i + per_call]
            pad = per_call - len(chunk)  # 0 but in the last chunk
            windows = [x[:, :, y : y + wh, x0 : x0 + ww] for y, x0 in chunk + chunk[-1:] * pad]
            tiles = cat(windows)  # (n*B, C, wh, ww)
            pred = self.model(tiles, tile_t(len(chunk) + pad))
            pred = pred.astype(np.float32) if numpy else pred.float()
            if out is None:
                out = zeros(b, pred.shape[1], h, w)
            for j, (y, x0) in enumerate(chunk):
                out[:, :, y : y + wh, x0 : x0 + ww] += pred[j * b : (j + 1) * b] * weight
                norm[:, :, y : y + wh, x0 : x0 + ww] += weight
            if self.on_chunk is not None:
                self.on_chunk(i + len(chunk), len(coords))
        assert out is not None
        return out / norm
