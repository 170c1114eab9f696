"""Attention kernels behind ``AttentionBlock``.

The block keeps ``nn.MultiheadAttention``'s parameters (spec 3.4) but calls the kernel itself, so
that PyTorch's fused SDPA kernels run and a faster kernel can be swapped in on CUDA.

Kernels: ``"sdpa"`` (PyTorch's ``scaled_dot_product_attention``, whichever backend it picks),
``"sdpa-flash"`` (the same, kept off its cuDNN backend: flash attention where it applies, else the
memory-efficient kernel, else math), ``"sdpa-safe"`` (cuDNN allowed only where the key count is a
multiple of 128, ``"sdpa-flash"`` elsewhere), ``"triton"`` (condiff's fused small-head kernel,
:mod:`condiff.nn.triton_attention`, on CUDA half-precision inputs with head size 8 to 32; SDPA
elsewhere) and ``"auto"`` (the default: ``"triton"`` where Triton is installed and CUDA is present,
else ``"sdpa"``), in eager code, ``torch.compile`` graphs and CUDA graphs alike.

Why ``"sdpa-flash"``: on Hopper (sm 90), torch 2.11's SDPA prefers cuDNN, whose backward has known
NaN bugs where a key tile is part padding (sequence length 64 mod 128) and a row's logsumexp is
very negative (pytorch/pytorch#196678, NVIDIA/cudnn-frontend#1072). The spec's network at 64 px
crops attends over 8 x 8 = 64 tokens at its deepest level, and the 15-minute recipes' skipped
steps carry NaNs born there (docs/NOTES.md, session 19). On a CPU it is plain SDPA.

Why ``"sdpa-safe"``: on an H100 (torch 2.11, cuDNN 9.19) cuDNN's backward gave NaN at 64 and 192
tokens and stayed finite at 256, 1,024 and 4,096, where it is the fastest backend (the gray
recipe's 4,096-token level: 32.6 ms forward + backward against flash's 41.1); at 64 tokens flash is
as fast (docs/NOTES.md, session 20). It keeps cuDNN where its tiles are full.

How they keep cuDNN off: on a CUDA device that runs flash attention (compute capability 8.0 on,
half-precision inputs, head size a multiple of 8 up to 256, a contiguous last dimension) they call
the flash kernel's own op, ``aten._scaled_dot_product_flash_attention``, which is what SDPA runs
with cuDNN off. An ``sdpa_kernel`` block inside a compiled region puts calls that
``torch.compile``'s AOTAutograd cache cannot key into the graph, so every process traced the
whole joint graph again (pytorch/pytorch#194007; the gray recipe's warm start-up was 31-34 s
against plain SDPA's 17.6, docs/NOTES.md, session 22). Elsewhere on CUDA they keep the
``sdpa_kernel`` block; on a CPU, which has no cuDNN, they are plain SDPA.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

# (q, k, v) each (B, heads, N, head_dim) -> (B, heads, N, head_dim)
AttentionKernel = Callable[[Tensor, Tensor, Tensor], Tensor]
KERNEL_CHOICES = ("auto", "sdpa", "sdpa-flash", "sdpa-safe", "triton")
# every SDPA backend but cuDNN's, in PyTorch's own order of preference
NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PyTorch's scaled_dot_product_attention (flash / cuDNN / mem-efficient / math)."""
    return F.scaled_dot_product_attention(q, k, v)


_cuda_flash = False  # whether this process's CUDA device runs flash attention (set on selection)


def flash_route(q: Tensor, k: Tensor, v: Tensor) -> str:
    """How :func:`sdpa_flash` runs on these inputs: ``"flash-op"`` (the flash kernel's aten op),
    ``"no-cudnn"`` (SDPA inside ``sdpa_kernel`` without cuDNN) or ``"sdpa"`` (no cuDNN here)."""
    if not q.is_cuda:
        return "sdpa"
    flash = (
        _cuda_flash
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.dtype == k.dtype == v.dtype
        and q.shape[-1] % 8 == 0
        and q.shape[-1] <= 256
        and q.shape[-1] == k.shape[-1] == v.shape[-1]
        and all(t.stride(-1) == 1 for t in (q, k, v))
    )
    return "flash-op" if flash else "no-cudnn"


def sdpa_flash(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """:func:`sdpa` without the cuDNN backend (flash / mem-efficient / math), by the route
    :func:`flash_route` picks (module docstring: why not always ``sdpa_kernel``)."""
    route = flash_route(q, k, v)
    if route == "flash-op":
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0]
    if route == "sdpa":
        return sdpa(q, k, v)
    with sdpa_kernel(NO_CUDNN):
        return sdpa(q, k, v)


def sdpa_safe(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """:func:`sdpa` where the key count is a multiple of 128 (cuDNN's tiles full), else
    :func:`sdpa_flash`. The count is a static shape, so a compiled graph holds one branch."""
    if k.shape[-2] % 128:
        return sdpa_flash(q, k, v)
    return sdpa(q, k, v)


@cache
def triton_available() -> bool:
    """Whether the Triton kernel can run here: Triton installed, a torch with
    ``torch.library.triton_op`` (2.6 or newer), and a CUDA device of compute capability 8.0 or
    newer (Ampere on: the kernel's bf16 tensor-core products; measured on an H200, sm 9.0)."""
    return (
        hasattr(torch.library, "triton_op")
        and importlib.util.find_spec("triton") is not None
        and torch.cuda.is_available()
        and torch.cuda.get_device_capability() >= (8, 0)
    )


_triton_module = None  # condiff.nn.triton_attention, imported when first selected


def _triton(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    if _triton_module is not None and _triton_module.supports(q):
        return _triton_module.small_head_attention(q, k, v)
    return sdpa(q, k, v)


_KERNELS: dict[str, AttentionKernel] = {
    "sdpa": sdpa,
    "sdpa-flash": sdpa_flash,
    "sdpa-safe": sdpa_safe,
    "triton": _triton,
}
_active = "auto"
_resolved = "sdpa"  # what `attention` calls: plain module state, so torch.compile just guards on it


def register_kernel(name: str, fn: AttentionKernel) -> None:
    _KERNELS[name] = fn


def set_attention_kernel(name: str) -> None:
    """Select the kernel every ``AttentionBlock`` uses: ``"auto"`` (default), ``"sdpa"``,
    ``"sdpa-flash"``, ``"sdpa-safe"``, ``"triton"`` or one added with :func:`register_kernel`."""
    if name != "auto" and name not in _KERNELS:
        raise ValueError(
            f"unknown attention kernel {name!r}; expected one of {sorted({'auto', *_KERNELS})}"
        )
    if name == "triton" and not triton_available():
        raise ValueError(
            "attention kernel 'triton' needs the triton package, a CUDA device of compute "
            "capability >= 8.0 and torch >= 2.6; "
            "use 'sdpa' or 'auto'"
        )
    global _active, _resolved, _triton_module, _cuda_flash
    resolved = ("triton" if triton_available() else "sdpa") if name == "auto" else name
    if resolved in ("sdpa-flash", "sdpa-safe"):  # asked here, outside any compiled graph
        _cuda_flash = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
    if resolved == "triton" and _triton_module is None:
        from condiff.nn import triton_attention

        _triton_module = triton_attention
    _active, _resolved = name, resolved


@contextmanager
def attention_kernel(name: str) -> Iterator[None]:
    """Use kernel ``name`` inside the block, then restore the previous selection (``"auto"``
    stays ``"auto"``)."""
    previous = _active
    set_attention_kernel(name)
    try:
        yield
    finally:
        set_attention_kernel(previous)


def get_attention_kernel() -> str:
    """The selected kernel's name, with ``"auto"`` resolved for this machine."""
    return _resolved


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    return _KERNELS[_resolved](q, k, v)


set_attention_kernel("auto")
