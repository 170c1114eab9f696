"""Samplers: plain, stateless functions sharing one signature.

    sampler(denoise, x_T, schedule, timesteps, *, eta, generator, progress) -> x0

``eta`` (stochasticity) None means the sampler's own default: 0 for ddim, 1 for dpmpp_2m_sde;
the other samplers ignore it (ddpm is always ancestral).

``denoise(x_t, t)`` maps a float32 state and ``(B,)`` integer timesteps to the clean-image
estimate ``x0_hat`` (already clipped or thresholded); ``timesteps`` is descending. Every
sampler keeps its state in float32 and ends at t = 0 with the final clean image.

The samplers only do arithmetic with Python-float coefficients, so they run on torch tensors
(``generator``: a ``torch.Generator``) and on numpy arrays (``generator``: a
``numpy.random.Generator``) alike: the ONNX Runtime engine uses them without torch. The torch
glue is in :mod:`condiff.diffusion.denoiser` (the network wrapper, torch noise) and
:mod:`condiff.diffusion.sampling` (``sample``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from condiff.diffusion.schedule import NoiseSchedule

Array = Any  # a torch.Tensor or a numpy.ndarray
Denoiser = Callable[[Array, Array], Array]


def _steps(timesteps: Sequence[int] | Array, progress: bool, desc: str) -> Iterable[int]:
    idx: Iterable[int] = range(len(timesteps))
    if progress:
        from tqdm.auto import tqdm

        idx = tqdm(idx, desc=desc, leave=False, unit="step")
    return idx


def _f32(x: Array) -> Array:
    return x.astype(np.float32) if isinstance(x, np.ndarray) else x.float()


def _tvec(x: Array, t: int) -> Array:
    if isinstance(x, np.ndarray):
        return np.full((x.shape[0],), t, dtype=np.int64)
    import torch

    return torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)


def _randn(x: Array, generator: Any) -> Array:
    if isinstance(x, np.ndarray):
        rng = generator if generator is not None else np.random.default_rng()
        return rng.standard_normal(x.shape, dtype=np.float32)
    from condiff.diffusion.denoiser import randn

    return randn(tuple(x.shape), generator, x.device)


def ddpm(
    denoise: Denoiser,
    x_T: Array,
    schedule: NoiseSchedule,
    timesteps: Array,
    *,
    eta: float | None = None,
    generator: Any = None,
    progress: bool = False,
) -> Array:
    """Ancestral sampling from q(x_prev | x_t, x0_hat) (Ho et al. 2020, eq. 6-7), respaced."""
    x = _f32(x_T)
    ts = timesteps.tolist()
    for i in _steps(timesteps, progress, "ddpm"):
        t, t_prev = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        a, a_prev = schedule.ab(t), schedule.ab(t_prev)
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


def ddim(
    denoise: Denoiser,
    x_T: Array,
    schedule: NoiseSchedule,
    timesteps: Array,
    *,
    eta: float | None = None,
    generator: Any = None,
    progress: bool = False,
) -> Array:
    """DDIM (Song et al. 2021, eq. 12); ``eta=0`` (the default) is deterministic, ``eta=1`` is
    DDPM's ancestral sampling."""
    eta = 0.0 if eta is None else eta
    x = _f32(x_T)
    ts = timesteps.tolist()
    for i in _steps(timesteps, progress, "ddim"):
        t, t_prev = ts[i], ts[i + 1] if i + 1 < len(ts) else -1
        a, a_prev = schedule.ab(t), schedule.ab(t_prev)
        x0 = denoise(x, _tvec(x, t))
        eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)  # the noise consistent with x and x0
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * _randn(x, generator)
    return x


def dpmpp_2m(
    denoise: Denoiser,
    x_T: Array,
    schedule: NoiseSchedule,
    timesteps: Array,
    *,
    eta: float | None = None,
    generator: Any = None,
    progress: bool = False,
) -> Array:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), first order on the first and last step.

    In log-SNR lambda = log(alpha / sigma) with alpha = sqrt(a), sigma = sqrt(1 - a):
    x_next = (sigma_next / sigma) x - alpha_next (e^{-h} - 1) D, with D the x0 estimate
    extrapolated from the last two steps. The last step lands on sigma = 0, i.e. D itself.
    """
    x = _f32(x_T)
    ts = timesteps.tolist()
    prev_x0: Array | None = None
    h_prev = 0.0
    for i in _steps(timesteps, progress, "dpmpp_2m"):
        t = ts[i]
        a = schedule.ab(t)
        x0 = denoise(x, _tvec(x, t))
        if i + 1 == len(ts):
            x = x0  # sigma_next = 0: the lower-order final step returns the x0 estimate
            break
        a_next = schedule.ab(ts[i + 1])
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


def dpmpp_2m_sde(
    denoise: Denoiser,
    x_T: Array,
    schedule: NoiseSchedule,
    timesteps: Array,
    *,
    eta: float | None = None,
    generator: Any = None,
    progress: bool = False,
) -> Array:
    """DPM-Solver++(2M) SDE (Lu et al. 2022; midpoint form as k-diffusion's), first order on the
    first and last step. With h = lambda_next - lambda in log-SNR and eta the noise share:
    x_next = (sigma_next / sigma) e^{-eta h} x + alpha_next (1 - e^{-(1 + eta) h}) D
             + sigma_next sqrt(1 - e^{-2 eta h}) z,
    D the x0 estimate extrapolated from the last two steps; eta = 0 is dpmpp_2m (default 1).
    """
    eta = 1.0 if eta is None else eta
    x = _f32(x_T)
    ts = timesteps.tolist()
    prev_x0: Array | None = None
    h_prev = 0.0
    for i in _steps(timesteps, progress, "dpmpp_2m_sde"):
        a = schedule.ab(ts[i])
        x0 = denoise(x, _tvec(x, ts[i]))
        if i + 1 == len(ts):
            x = x0
            break
        a_next = schedule.ab(ts[i + 1])
        h = 0.5 * math.log(a_next / (1 - a_next)) - 0.5 * math.log(a / (1 - a))
        d = x0
        if prev_x0 is not None:
            r = h_prev / h
            d = x0 + (0.5 / r) * (x0 - prev_x0)
        x = (
            math.sqrt((1 - a_next) / (1 - a)) * math.exp(-eta * h) * x
            - math.sqrt(a_next) * math.expm1(-(1 + eta) * h) * d
        )
        if eta > 0:
            x = x + math.sqrt(1 - a_next) * math.sqrt(-math.expm1(-2 * eta * h)) * _randn(
                x, generator
            )
        prev_x0, h_prev = x0, h
    return x


def _sigma(a: float) -> float:
    """Variance-exploding noise level of a VP step: sigma = sqrt((1 - a) / a)."""
    return math.sqrt((1 - a) / a)


def euler(
    denoise: Denoiser,
    x_T: Array,
    schedule: NoiseSchedule,
    timesteps: Array,
    *,
    eta: float | None = None,
    generator: Any = None,
    progress: bool = False,
) -> Array:
    """Euler's method on the probability-flow ODE in sigma space (Karras et al. 2022, eq. 1)."""
    ts = timesteps.tolist()
    sig = [_sigma(schedule.ab(t)) for t in ts] + [0.0]
    x = _f32(x_T) * math.sqrt(1 + sig[0] ** 2)  # VP state -> sigma-space state x0 + sigma eps
    for i in _steps(timesteps, progress, "euler"):
        x0 = denoise(x / math.sqrt(1 + sig[i] ** 2), _tvec(x, ts[i]))
        d = (x - x0) / sig[i]
        x = x + d * (sig[i + 1] - sig[i])
    return x


def heun(
    denoise: Denoiser,
    x_T: Array,
    schedule: NoiseSchedule,
    timesteps: Array,
    *,
    eta: float | None = None,
    generator: Any = None,
    progress: bool = False,
) -> Array:
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 1), Euler on the last step.

    Uses 2 * steps - 1 network calls.
    """
    ts = timesteps.tolist()
    sig = [_sigma(schedule.ab(t)) for t in ts] + [0.0]
    x = _f32(x_T) * math.sqrt(1 + sig[0] ** 2)
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


Sampler = Callable[..., Array]
SAMPLERS: dict[str, Sampler] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "euler": euler,
    "heun": heun,
}


def get_sampler(name: str) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


ESTIMATES = ("sample", "mean", "perceptual")


def estimate_plan(
    estimate: str, sampler: str, steps: int, spacing: str, num_samples: int
) -> tuple[str, int, str]:
    """The (sampler, steps, spacing) that produce an estimate.

    ``"sample"``: posterior samples, as asked. ``"mean"``: the posterior mean, the minimum-MSE
    point estimate. With one sample it is one network call, the x0 prediction at the top
    timestep T-1 (DDIM's single trailing step), which is E[x0 | cond] up to the little signal a
    non-zero terminal SNR leaves in x_T; with ``num_samples=K`` the K samples are averaged
    (by the caller). ``"perceptual"``: the perceptual stage's generator, one call at T-1 as the
    mean's (each of ``num_samples`` from its own noise).
    """
    if estimate not in ESTIMATES:
        raise ValueError(f"unknown estimate {estimate!r}; expected one of {list(ESTIMATES)}")
    if (estimate == "mean" and num_samples == 1) or estimate == "perceptual":
        return "ddim", 1, "trailing"
    return sampler, steps, spacing


def network_calls(sampler: str, steps: int) -> int:
    """How many network evaluations a sampler makes for ``steps`` steps."""
    return 2 * steps - 1 if sampler == "heun" else steps
