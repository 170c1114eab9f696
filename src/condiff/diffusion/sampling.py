"""The torch side of sampling: noise, the denoiser wrapper around a network, and ``sample``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from condiff.diffusion.objectives import concat_condition, to_x0
from condiff.diffusion.samplers import Denoiser, get_sampler
from condiff.diffusion.schedule import NoiseSchedule


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
) -> Denoiser:
    """Wrap a network into ``denoise(x_t, t) -> x0_hat``: concat the condition, cast, convert, and
    clip to ``[-clip_value, clip_value]`` (the diffused variable's range: ``target_scale``)."""
    net_dtype = dtype or _model_dtype(model)
    cond_in = cond.to(net_dtype)

    @torch.no_grad()
    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        pred = model(concat_condition(x_t.to(net_dtype), cond_in), t).float()
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


@torch.no_grad()
def sample(
    model: Callable[[Tensor, Tensor], Tensor],
    cond: Tensor,
    schedule: NoiseSchedule,
    *,
    target_channels: int,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
    objective: str = "eps",
    spacing: str = "trailing",
    clip: bool = True,
    clip_value: float = 1.0,
    dynamic_threshold_percentile: float | None = None,
    x_T: Tensor | None = None,
) -> Tensor:
    """Draw ``(B, target_channels, H, W)`` samples conditioned on ``cond`` ``(B, C_cond, H, W)``.

    ``model(x_concat, t)`` is any callable returning the network's prediction of ``objective``.
    """
    fn = get_sampler(sampler)
    if cond.ndim != 4:
        raise ValueError(f"cond must be (B, C, H, W), got shape {tuple(cond.shape)}")
    if target_channels < 1:
        raise ValueError(f"target_channels must be >= 1, got {target_channels}")
    timesteps = schedule.timesteps(steps, spacing)
    b, _, h, w = cond.shape
    if x_T is None:
        x_T = randn((b, target_channels, h, w), generator, cond.device)
    elif x_T.shape != (b, target_channels, h, w):
        raise ValueError(
            f"x_T has shape {tuple(x_T.shape)}, expected {(b, target_channels, h, w)} "
            "(batch and size of cond, target_channels)"
        )
    denoise = make_denoiser(
        model,
        cond,
        schedule,
        objective=objective,
        clip=clip,
        clip_value=clip_value,
        dynamic_threshold_percentile=dynamic_threshold_percentile,
    )
    return fn(denoise, x_T, schedule, timesteps, eta=eta, generator=generator, progress=progress)
