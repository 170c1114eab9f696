"""Attention kernels behind ``AttentionBlock``.

The block keeps ``nn.MultiheadAttention``'s parameters (spec 3.4) but calls the kernel itself, so
that PyTorch's fused SDPA kernels run and a faster kernel can be swapped in on CUDA.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

# (q, k, v) each (B, heads, N, head_dim) -> (B, heads, N, head_dim)
AttentionKernel = Callable[[Tensor, Tensor, Tensor], Tensor]


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PyTorch's scaled_dot_product_attention (flash / cuDNN / mem-efficient / math)."""
    return F.scaled_dot_product_attention(q, k, v)


_KERNELS: dict[str, AttentionKernel] = {"sdpa": sdpa}
_active = "sdpa"


def register_kernel(name: str, fn: AttentionKernel) -> None:
    _KERNELS[name] = fn


def set_attention_kernel(name: str) -> None:
    """Select the attention kernel every ``AttentionBlock`` uses (``"sdpa"`` is the default)."""
    global _active
    if name not in _KERNELS:
        raise ValueError(f"unknown attention kernel {name!r}; expected one of {sorted(_KERNELS)}")
    _active = name


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return _KERNELS[_active](q, k, v)
