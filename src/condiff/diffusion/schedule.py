"""Discrete variance-preserving noise schedules (betas and their cumulative products).

The tables are computed in numpy (float64), so that the ONNX Runtime engine can use them without
torch; ``NoiseSchedule`` hands them to torch code as tensors.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from condiff.config import DiffusionConfig

SCHEDULES = ("linear", "cosine", "sigmoid")
SPACINGS = ("leading", "trailing", "linspace")


def linear_betas(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """DDPM's linear schedule (Ho et al. 2020, section 4)."""
    return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021, eq. 17), betas capped at 0.999."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
        for i in range(num_timesteps)
    ]
    return np.array(betas, dtype=np.float64)


def sigmoid_betas(
    num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """GeoDiff's sigmoid schedule (Xu et al. 2022): sigmoid(linspace(-6, 6)) scaled to the range."""
    u = np.linspace(-6, 6, num_timesteps, dtype=np.float64)
    return 1 / (1 + np.exp(-u)) * (beta_end - beta_start) + beta_start


def rescale_betas_zero_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale sqrt(alpha_bar) so the last step has SNR 0 (Lin et al. 2024, Algorithm 1)."""
    sqrt_ab = np.sqrt(np.cumprod(1 - betas))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    ab = ((sqrt_ab - last) * first / (first - last)) ** 2
    return 1 - np.concatenate([ab[:1], ab[1:] / ab[:-1]])


def spaced_timesteps(num_timesteps: int, steps: int, spacing: str = "trailing") -> np.ndarray:
    """Descending integer timesteps (int64) for a sampler of ``steps`` steps (DDIM's rules).

    ``leading`` and ``linspace`` follow Song et al. 2021 / diffusers; ``trailing`` starts at
    T-1 so the first step sees pure noise (Lin et al. 2024, table 2).
    """
    t_max = num_timesteps
    if not 1 <= steps <= t_max:
        raise ValueError(f"steps must be in 1..{t_max} (the schedule's length), got {steps}")
    if spacing == "leading":
        ts = (np.arange(0, steps) * (t_max // steps))[::-1]
    elif spacing == "trailing":
        # diffusers' rule, cut to ``steps`` values: for 62 step counts (61, 103, 121, ...) the
        # float arange has one more, ~0, which became t = -1 (a network call off the chain)
        ts = np.round(np.arange(t_max, 0, -t_max / steps))[:steps] - 1
    elif spacing == "linspace":
        ts = np.linspace(0, t_max - 1, steps).round()[::-1]
    else:
        raise ValueError(f"unknown timestep spacing {spacing!r}; expected one of {list(SPACINGS)}")
    return ts.copy().astype(np.int64)


class NoiseSchedule:
    """``betas`` and ``alphas_cumprod`` (``(T,)`` float64) of a discrete VP diffusion.

    ``x_t = sqrt(alphas_cumprod[t]) * x0 + sqrt(1 - alphas_cumprod[t]) * eps`` for ``t`` in [0, T).
    ``betas_np`` / ``alphas_cumprod_np`` are the numpy tables; ``betas`` / ``alphas_cumprod`` the
    same as torch tensors.
    """

    def __init__(
        self,
        kind: str = "linear",
        num_timesteps: int = 1000,
        *,
        rescale_zero_terminal_snr: bool = False,
    ) -> None:
        if kind not in SCHEDULES:
            raise ValueError(f"unknown noise schedule {kind!r}; expected one of {list(SCHEDULES)}")
        if num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {num_timesteps}")
        self.kind = kind
        self.num_timesteps = num_timesteps
        self.zero_terminal_snr = rescale_zero_terminal_snr
        betas = {"linear": linear_betas, "cosine": cosine_betas, "sigmoid": sigmoid_betas}[kind](
            num_timesteps
        )
        if rescale_zero_terminal_snr:
            betas = rescale_betas_zero_snr(betas)
        self.betas_np = betas
        self.alphas_cumprod_np = np.cumprod(1 - betas)
        if rescale_zero_terminal_snr:
            # SNR exactly 0 makes eps -> x0 and log-SNR undefined; keep it tiny, as diffusers does.
            self.alphas_cumprod_np[-1] = 2.0**-24
        self._on_device: dict[torch.device, Tensor] = {}

    @classmethod
    def from_config(cls, d: DiffusionConfig) -> NoiseSchedule:
        """The schedule a run's ``diffusion`` section describes."""
        return cls(
            d.schedule, d.num_timesteps, rescale_zero_terminal_snr=d.rescale_zero_terminal_snr
        )

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule({self.kind!r}, num_timesteps={self.num_timesteps}, "
            f"rescale_zero_terminal_snr={self.zero_terminal_snr})"
        )

    @property
    def betas(self) -> Tensor:
        import torch

        return torch.from_numpy(self.betas_np)

    @property
    def alphas_cumprod(self) -> Tensor:
        import torch

        return torch.from_numpy(self.alphas_cumprod_np)

    def ab(self, t: int) -> float:
        """alpha_bar at one integer timestep; t < 0 is the clean end of the chain (1.0)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod_np[t])

    def alpha_bar(self, t: Tensor) -> Tensor:
        """alphas_cumprod at integer timesteps ``t`` (any shape), as float32 on ``t``'s device."""
        table = self._on_device.get(t.device)
        if table is None:  # one host-to-device copy per device (keeps sampling graph-capturable)
            table = self._on_device[t.device] = self.alphas_cumprod.float().to(t.device)
        return table[t.long()]

    def snr(self, t: Tensor) -> Tensor:
        ab = self.alpha_bar(t)
        return ab / (1 - ab)

    def timesteps(self, steps: int, spacing: str = "trailing") -> Tensor:
        """:func:`spaced_timesteps` for this schedule, as an int64 tensor."""
        import torch

        return torch.from_numpy(spaced_timesteps(self.num_timesteps, steps, spacing))
