"""The spec's building blocks: ResidualBlock (3.3), AttentionBlock (3.4), Down/Upsample (3.5-3.6)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from condiff.nn.attention import attention


class ResidualBlock(nn.Module):
    """GN -> SiLU -> conv3x3 -> + time -> GN -> SiLU -> dropout -> conv3x3, plus a (1x1) skip."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_emb_mlp_dim: int,
        *,
        num_groups: int = 32,
        dropout_rate: float = 0.1,
    ) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(num_groups, in_channels)
        self.act1 = nn.SiLU()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_mlp_dim, out_channels))
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.act2 = nn.SiLU()
        self.dropout = nn.Dropout(dropout_rate)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.skip: nn.Module = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1)
            if in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        h = self.conv1(self.act1(self.norm1(x)))
        h = h + self.time_proj(t_emb)[:, :, None, None]  # (B, C_out) broadcast over H, W
        h = self.conv2(self.dropout(self.act2(self.norm2(h))))
        return h + self.skip(x)


class AttentionBlock(nn.Module):
    """GN -> 1x1 conv to Q,K,V -> nn.MultiheadAttention -> 1x1 conv -> residual (READING.md).

    ``self.mha`` holds the attention's own input and output projections; ``forward`` applies them
    with the same math as ``nn.MultiheadAttention`` but calls the fused kernel directly.
    """

    def __init__(self, channels: int, *, num_heads: int = 8, num_groups: int = 32) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(
                f"attention channels ({channels}) must be divisible by num_heads_attn ({num_heads})"
            )
        self.channels = channels
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(num_groups, channels)
        self.qkv = nn.Conv2d(channels, channels * 3, kernel_size=1)
        self.mha = nn.MultiheadAttention(channels, num_heads, batch_first=True)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        n, nh = h * w, self.num_heads
        qkv = self.qkv(self.norm(x)).flatten(2).transpose(1, 2)  # (B, N, 3C)
        q, k, v = qkv.chunk(3, dim=-1)  # each (B, N, C)
        # MultiheadAttention's in-projection, one weight slice per Q, K, V.
        wq, wk, wv = self.mha.in_proj_weight.chunk(3, dim=0)
        bq, bk, bv = self.mha.in_proj_bias.chunk(3, dim=0)
        q = F.linear(q, wq, bq).view(b, n, nh, c // nh).transpose(1, 2)  # (B, nh, N, hd)
        k = F.linear(k, wk, bk).view(b, n, nh, c // nh).transpose(1, 2)
        v = F.linear(v, wv, bv).view(b, n, nh, c // nh).transpose(1, 2)
        o = attention(q, k, v).transpose(1, 2).reshape(b, n, c)  # (B, N, C)
        o = self.mha.out_proj(o)
        o = o.transpose(1, 2).reshape(b, c, h, w)  # (B, C, H, W)
        return x + self.proj_out(o)


class Downsample(nn.Module):
    """Strided 3x3 conv halving H and W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.up(x))
