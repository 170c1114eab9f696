"""The denoiser: a network wrapped into ``denoise(x_t, t) -> x0_hat``, and the sampling noise.

Below both :mod:`condiff.diffusion.samplers` (which draws its noise here for torch tensors) and
:mod:`condiff.diffusion.sampling` (which wraps a network and runs a sampler).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from condiff.diffusion.objectives import concat_condition, to_x0
from condiff.diffusion.schedule import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]


def randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """Float32 Gaussian noise on ``device``, drawn on the generator's own device (reproducible)."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def dynamic_threshold(x0: Tensor, percentile: float) -> Tensor:
    """Imagen's dynamic thresholding (Saharia et al. 2022, section 2.3), per sample."""
    s = torch.quantile(x0.abs().flatten(1), percentile, dim=1).clamp(min=1.0)
    s = s.view(-1, 1, 1, 1)  # (B, 1, 1, 1)
    return x0.clamp(-s, s) / s


def make_denoiser(
    model: Callable[[Tensor, Tensor], Tensor],
    cond: Tensor,
    schedule: NoiseSchedule,
    *,
    objective: str = "eps",
    clip: bool = True,
    clip_value: float = 1.0,
    dynamic_threshold_percentile: float | None = None,
    dtype: torch.dtype | None = None,
    guidance: float = 0.0,
) -> Denoiser:
    """Wrap a network into ``denoise(x_t, t) -> x0_hat``: concat the condition, cast, convert, and
    clip to ``[-clip_value, clip_value]`` (the diffused variable's range: ``target_scale``).

    ``guidance`` ``w > 0``: classifier-free guidance (Ho & Salimans 2022) for a network trained
    with the condition dropped (zeroed, ``diffusion.cond_drop_prob``): the prediction is
    ``(1 + w) * pred(cond) - w * pred(zeros)``, both halves in one batched call."""
    if guidance < 0:
        raise ValueError(f"guidance must be >= 0, got {guidance}")
    net_dtype = dtype or _model_dtype(model)
    cond_in = cond.to(net_dtype)
    if guidance > 0:
        cond_in = torch.cat([cond_in, torch.zeros_like(cond_in)])

    def predict(x_t: Tensor, t: Tensor) -> Tensor:
        if guidance == 0:
            return model(concat_condition(x_t.to(net_dtype), cond_in), t).float()
        x2 = torch.cat([x_t, x_t]).to(net_dtype)
        both = model(concat_condition(x2, cond_in), torch.cat([t, t])).float()
        pred_c, pred_u = both.chunk(2)
        return pred_c + guidance * (pred_c - pred_u)

    @torch.no_grad()
    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        pred = predict(x_t, t)
        x0 = to_x0(objective, pred, x_t, schedule.alpha_bar(t))
        if dynamic_threshold_percentile is not None:
            return dynamic_threshold(x0, dynamic_threshold_percentile)
        return x0.clamp(-clip_value, clip_value) if clip else x0

    return denoise


def _model_dtype(model: object) -> torch.dtype:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.dtype
    return torch.float32
