"""Exponential moving average of the weights, kept in float32 (Polyak averaging)."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class EMA:
    """``self.model`` is a frozen float32 copy whose parameters are the running average."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).float().eval().requires_grad_(False)
        # listed once (walking the modules every step costs host time): the averages, and the
        # trained model's parameters and buffers beside them (weights load in place, so they stay)
        self._avg = list(self.model.parameters())
        self._avg_buffers = list(self.model.buffers())
        self._src: tuple[nn.Module, list[Tensor], list[Tensor]] | None = None

    def effective_decay(self, step: int) -> float:
        """Warm-up: average over the steps seen so far until ``decay`` takes over."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int, weight: Tensor | None = None) -> None:
        """One average step. ``weight`` (a 0-dim tensor on the device, 1 or 0) scales it: a
        step skipped on the device (non-finite, decided without a host read) leaves it as is."""
        d = self.effective_decay(step)
        if self._src is None or self._src[0] is not model:
            self._src = (model, list(model.parameters()), list(model.buffers()))
        ema_p, src_p = self._avg, [p.float() for p in self._src[1]]  # float(): no copy for fp32
        if weight is None:
            torch._foreach_lerp_(ema_p, src_p, 1 - d)  # ema += (1 - d) * (p - ema)
        else:
            diffs = torch._foreach_sub(src_p, ema_p)
            torch._foreach_mul_(diffs, weight.float() * (1 - d))
            torch._foreach_add_(ema_p, diffs)
        for eb, b in zip(self._avg_buffers, self._src[2], strict=True):
            eb.copy_(b)
