"""Forward noising, prediction targets, and the training loss.

The conversions between eps, x0 and v predictions live here and nowhere else; they work on torch
tensors and numpy arrays alike (the ONNX Runtime engine uses them without torch).
Conditioning is channel concatenation ``[x_t, cond]`` in that order, everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from condiff.diffusion.schedule import NoiseSchedule

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    ModelFn = Callable[[Tensor, Tensor], Tensor]

OBJECTIVES = ("eps", "v", "x0")


def _b(a: Tensor) -> Tensor:
    return a.reshape(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1)


def concat_condition(x_t: Tensor, cond: Tensor) -> Tensor:
    """The network's input: noisy target then condition, on channels."""
    if isinstance(x_t, np.ndarray):
        return np.concatenate([x_t, cond], axis=1)
    import torch

    return torch.cat([x_t, cond], dim=1)


def batched_condition(cond: Tensor, channels: int) -> Tensor:
    """``(C, H, W)`` or ``(B, C, H, W)`` -> ``(B, C, H, W)``; a clear error for any other shape."""
    if cond.ndim == 3:
        cond = cond[None]
    if cond.ndim != 4 or cond.shape[1] != channels:
        raise ValueError(
            f"condition must be (B, {channels}, H, W) for this model, got {tuple(cond.shape)}"
        )
    return cond


def encode_target(x0: Tensor, cond: Tensor, *, residual: bool, scale: float) -> Tensor:
    """What the diffusion runs on: ``scale * x0``, or with ``residual`` the scaled residual
    ``scale * (x0 - cond[:, :C])`` over the condition's first C channels (SRDiff, Li et al. 2022)."""
    if residual:
        x0 = x0 - cond[:, : x0.shape[1]]
    return x0 * scale if scale != 1 else x0


def decode_target(z: Tensor, cond: Tensor, *, residual: bool, scale: float) -> Tensor:
    """The inverse of :func:`encode_target` (unclipped)."""
    if scale != 1:
        z = z / scale
    return z + cond[:, : z.shape[1]] if residual else z


def q_sample(x0: Tensor, alpha_bar: Tensor, eps: Tensor) -> Tensor:
    """x_t = sqrt(a) x0 + sqrt(1 - a) eps (Ho et al. 2020, eq. 4); ``alpha_bar`` is ``(B,)``."""
    return _b(alpha_bar**0.5) * x0 + _b((1 - alpha_bar) ** 0.5) * eps


def target_for(objective: str, x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """What the network is trained to output. v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022)."""
    if objective == "eps":
        return eps
    if objective == "x0":
        return x0
    if objective == "v":
        return _b(alpha_bar**0.5) * eps - _b((1 - alpha_bar) ** 0.5) * x0
    raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")


def to_x0(objective: str, pred: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """Turn a network prediction into the clean-image estimate x0_hat."""
    sa, s1a = _b(alpha_bar**0.5), _b((1 - alpha_bar) ** 0.5)
    if objective == "eps":
        return (x_t - s1a * pred) / sa
    if objective == "x0":
        return pred
    if objective == "v":
        return sa * x_t - s1a * pred
    raise ValueError(f"unknown objective {objective!r}; expected one of {list(OBJECTIVES)}")


def eps_from_x0(x0_hat: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """The noise consistent with x_t and an x0 estimate (inverse of ``q_sample``)."""
    return (x_t - _b(alpha_bar**0.5) * x0_hat) / _b((1 - alpha_bar) ** 0.5)


def snr_weight(objective: str, snr: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma loss weight (Hang et al. 2023), expressed for each objective's target.

    A zero-SNR step (the top of a zero-terminal-SNR schedule: the posterior mean's one call)
    keeps weight 1: the formula gives it 0 (v, x0) or 0/0 (eps), so the mean's step would learn
    nothing."""
    import torch

    clipped = snr.clamp(max=gamma)
    if objective == "eps":
        w = clipped / snr.clamp(min=1e-20)
    elif objective == "v":
        w = clipped / (snr + 1)
    else:
        w = clipped
    return torch.where(snr > 0, w, torch.ones_like(w))


def diffusion_loss(
    model: ModelFn,
    x0: Tensor,
    cond: Tensor,
    schedule: NoiseSchedule,
    *,
    objective: str = "eps",
    weighting: str = "uniform",
    snr_gamma: float = 5.0,
    loss: str = "l2",
    cond_drop_prob: float = 0.0,
    t: Tensor | None = None,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-sample loss ``(B,)`` of predicting ``objective`` from ``[x_t, cond]`` and ``t``.

    ``t`` and ``eps`` default to uniform timesteps and Gaussian noise drawn from ``generator``.
    """
    import torch

    b = x0.shape[0]
    if cond.shape[0] != b or cond.shape[-2:] != x0.shape[-2:]:
        raise ValueError(
            f"x0 {tuple(x0.shape)} and cond {tuple(cond.shape)} must share batch and spatial size"
        )
    if t is None:
        t = torch.randint(0, schedule.num_timesteps, (b,), device=x0.device, generator=generator)
    if eps is None:
        eps = torch.randn(x0.shape, device=x0.device, dtype=x0.dtype, generator=generator)
    if cond_drop_prob > 0:
        keep = torch.rand(b, device=x0.device, generator=generator) >= cond_drop_prob
        cond = cond * _b(keep.to(cond.dtype))
    alpha_bar = schedule.alpha_bar(t)
    x_t = q_sample(x0, alpha_bar, eps)
    pred = model(concat_condition(x_t, cond), t)
    target = target_for(objective, x0, eps, alpha_bar)
    err = pred.float() - target.float()
    per_sample = (err.square() if loss == "l2" else err.abs()).mean(dim=(1, 2, 3))
    if weighting == "min_snr":
        per_sample = per_sample * snr_weight(objective, schedule.snr(t), snr_gamma)
    elif weighting != "uniform":
        raise ValueError(f"unknown loss weighting {weighting!r}; expected 'uniform' or 'min_snr'")
    return per_sample
