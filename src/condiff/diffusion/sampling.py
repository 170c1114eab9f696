"""``sample``: draw targets for conditions with a network, a schedule and a named sampler."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from condiff.diffusion.denoiser import make_denoiser, randn
from condiff.diffusion.samplers import get_sampler
from condiff.diffusion.schedule import NoiseSchedule


@torch.no_grad()
def sample(
    model: Callable[[Tensor, Tensor], Tensor],
    cond: Tensor,
    schedule: NoiseSchedule,
    *,
    target_channels: int,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    eta: float | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    objective: str = "eps",
    spacing: str = "trailing",
    clip: bool = True,
    clip_value: float = 1.0,
    dynamic_threshold_percentile: float | None = None,
    x_T: Tensor | None = None,
    guidance: float = 0.0,
) -> Tensor:
    """Draw ``(B, target_channels, H, W)`` samples conditioned on ``cond`` ``(B, C_cond, H, W)``.

    ``model(x_concat, t)`` is any callable returning the network's prediction of ``objective``.
    ``guidance``: classifier-free guidance weight (see :func:`make_denoiser`).
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
        guidance=guidance,
    )
    return fn(denoise, x_T, schedule, timesteps, eta=eta, generator=generator, progress=progress)
