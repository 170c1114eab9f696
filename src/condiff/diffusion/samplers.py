"""Samplers: plain, stateless functions sharing one signature.

    sampler(denoise, x_T, schedule, timesteps, *, eta, generator, progress) -> x0

``denoise(x_t, t)`` maps a float32 state and ``(B,)`` integer timesteps to the clean-image
estimate ``x0_hat`` (already clipped or thresholded); ``timesteps`` is descending. Every
sampler keeps its state in float32 and ends at t = 0 with the final clean image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

from condiff.diffusion.objectives import concat_condition, eps_from_x0, to_x0
from condiff.diffusion.schedule import NoiseSchedule

Denoiser = Callable[[Tensor, Tensor], Tensor]


def _steps(timesteps: Tensor, progress: bool, desc: str) -> Iterable[int]:
    idx: Iterable[int] = range(len(timesteps))
    if progress:
        from tqdm.auto import tqdm

        idx = tqdm(idx, desc=desc, leave=False, unit="step")
    return idx


def _ab(schedule: NoiseSchedule, t: int) -> float:
    """alpha_bar at integer t; t < 0 means the clean end of the chain (alpha_bar = 1)."""
    return 1.0 if t < 0 else float(schedule.alphas_cumprod[t])


def _tvec(x: Tensor, t: int) -> Tensor:
    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def randn(
    shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """Float32 Gaussian noise on ``device``, drawn on the generator's own device (reproducible)."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device).to(device)


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return randn(tuple(x.shape), generator, x.device)


@torch.no_grad()
def ddpm(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    *,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Ancestral sampling from q(x_prev | x_t, x0_hat) (Ho et al. 2020, eq. 6-7), respaced."""
    x = x_T.float()
    ts = timesteps.tolist()
    for i in _steps(timesteps, progress, "ddpm"):
        t, t_prev = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        a, a_prev = _ab(schedule, t), _ab(schedule, t_prev)
        beta = 1 - a / a_prev  # the respaced step's beta
        x0 = denoise(x, _tvec(x, t))
        # 1. posterior mean (eq. 7): coefficients on x0_hat and x_t
        mean = (math.sqrt(a_prev) * beta / (1 - a)) * x0 + (
            math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)
        ) * x
        # 2. posterior variance beta_tilde ("fixed_small"); no noise on the last step
        if t_prev >= 0:
            var = max((1 - a_prev) / (1 - a) * beta, 1e-20)
            mean = mean + math.sqrt(var) * _randn(x, generator)
        x = mean
    return x


@torch.no_grad()
def ddim(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """DDIM (Song et al. 2021, eq. 12); ``eta=0`` is deterministic, ``eta=1`` is DDPM-like."""
    x = x_T.float()
    ts = timesteps.tolist()
    for i in _steps(timesteps, progress, "ddim"):
        t, t_prev = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        a, a_prev = _ab(schedule, t), _ab(schedule, t_prev)
        x0 = denoise(x, _tvec(x, t))
        eps = eps_from_x0(x0, x, torch.full((x.shape[0],), a, device=x.device))
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _randn(x, generator)
    return x


@torch.no_grad()
def dpmpp_2m(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), first order on the first and last step.

    In log-SNR lambda = log(alpha / sigma) with alpha = sqrt(a), sigma = sqrt(1 - a):
    x_next = (sigma_next / sigma) x - alpha_next (e^{-h} - 1) D, with D the x0 estimate
    extrapolated from the last two steps. The last step lands on sigma = 0, i.e. D itself.
    """
    x = x_T.float()
    ts = timesteps.tolist()
    prev_x0: Tensor | None = None
    h_prev = 0.0
    for i in _steps(timesteps, progress, "dpmpp_2m"):
        t = ts[i]
        a = _ab(schedule, t)
        x0 = denoise(x, _tvec(x, t))
        if i + 1 == len(ts):
            x = x0  # sigma_next = 0: the lower-order final step returns the x0 estimate
            break
        a_next = _ab(schedule, ts[i + 1])
        lam = 0.5 * math.log(a / (1 - a))
        lam_next = 0.5 * math.log(a_next / (1 - a_next))
        h = lam_next - lam
        d = x0
        if prev_x0 is not None:
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
        x = math.sqrt((1 - a_next) / (1 - a)) * x - math.sqrt(a_next) * math.expm1(-h) * d
        prev_x0, h_prev = x0, h
    return x


def _sigma(a: float) -> float:
    """Variance-exploding noise level of a VP step: sigma = sqrt((1 - a) / a)."""
    return math.sqrt((1 - a) / a)


@torch.no_grad()
def euler(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Euler's method on the probability-flow ODE in sigma space (Karras et al. 2022, eq. 1)."""
    ts = timesteps.tolist()
    sig = [_sigma(_ab(schedule, t)) for t in ts] + [0.0]
    x = x_T.float() * math.sqrt(1 + sig[0] ** 2)  # VP state -> sigma-space state x0 + sigma eps
    for i in _steps(timesteps, progress, "euler"):
        x0 = denoise(x / math.sqrt(1 + sig[i] ** 2), _tvec(x, ts[i]))
        d = (x - x0) / sig[i]
        x = x + d * (sig[i + 1] - sig[i])
    return x


@torch.no_grad()
def heun(
    denoise: Denoiser,
    x_T: Tensor,
    schedule: NoiseSchedule,
    timesteps: Tensor,
    *,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1), Euler on the last step.

    Uses 2 * steps - 1 network calls.
    """
    ts = timesteps.tolist()
    sig = [_sigma(_ab(schedule, t)) for t in ts] + [0.0]
    x = x_T.float() * math.sqrt(1 + sig[0] ** 2)
    for i in _steps(timesteps, progress, "heun"):
        s, s_next = sig[i], sig[i + 1]
        x0 = denoise(x / math.sqrt(1 + s**2), _tvec(x, ts[i]))
        d = (x - x0) / s
        x_pred = x + d * (s_next - s)
        if s_next == 0:
            x = x_pred
            break
        x0_next = denoise(x_pred / math.sqrt(1 + s_next**2), _tvec(x, ts[i + 1]))
        d_next = (x_pred - x0_next) / s_next
        x = x + 0.5 * (d + d_next) * (s_next - s)
    return x


Sampler = Callable[..., Tensor]
SAMPLERS: dict[str, Sampler] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpmpp_2m": dpmpp_2m,
    "euler": euler,
    "heun": heun,
}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def network_calls(sampler: str, steps: int) -> int:
    """How many network evaluations a sampler makes for ``steps`` steps."""
    return 2 * steps - 1 if sampler == "heun" else steps


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
    dynamic_threshold_percentile: float | None = None,
    dtype: torch.dtype | None = None,
) -> Denoiser:
    """Wrap a network into ``denoise(x_t, t) -> x0_hat``: concat the condition, cast, convert, clip."""
    net_dtype = dtype or _model_dtype(model)
    cond_in = cond.to(net_dtype)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        pred = model(concat_condition(x_t.to(net_dtype), cond_in), t).float()
        x0 = to_x0(objective, pred, x_t, schedule.alpha_bar(t))
        if dynamic_threshold_percentile is not None:
            return dynamic_threshold(x0, dynamic_threshold_percentile)
        return x0.clamp(-1, 1) if clip else x0

    return denoise


def _model_dtype(model: object) -> torch.dtype:
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.dtype
    return torch.float32


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
        dynamic_threshold_percentile=dynamic_threshold_percentile,
    )
    return fn(denoise, x_T, schedule, timesteps, eta=eta, generator=generator, progress=progress)
