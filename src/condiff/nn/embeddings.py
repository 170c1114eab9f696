"""Timestep embeddings (spec section 3.1 and 3.2)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalPositionalEncoding(nn.Module):
    """Map a timestep ``(B,)`` to ``(B, dim)``: half sines, half cosines of geometric frequencies.

    Transformer positional encoding (Vaswani et al. 2017) as used by DDPM (Ho et al. 2020).
    """

    def __init__(self, dim: int, max_period: float = 10000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time_emb_dim must be even for sin/cos halves, got {dim}")
        self.dim = dim
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        args = t.float()[:, None] * self.freqs[None, :]  # (B, half)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)  # (B, dim)


def time_mlp(time_emb_dim: int, time_emb_mlp_dim: int) -> nn.Sequential:
    """Spec 3.2: Linear -> SiLU -> Linear."""
    return nn.Sequential(
        nn.Linear(time_emb_dim, time_emb_mlp_dim),
        nn.SiLU(),
        nn.Linear(time_emb_mlp_dim, time_emb_mlp_dim),
    )
