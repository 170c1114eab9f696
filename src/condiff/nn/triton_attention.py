"""A fused Triton attention kernel for small heads (head size 8 to 32), forward and backward.

At the spec's head size 8 attention is bound by the per-element softmax work, not by the matrix
products, so the kernel spends as few instructions per score as it can:

- scores are taken in the log2 domain (``exp2``) with the softmax scale applied in the same
  fused multiply-add that subtracts the row offset;
- the row offset is a fixed Cauchy-Schwarz bound, |q_i| max_j |k_j| times the scale, wherever all
  bounds of a query tile are <= 60 (then exp2(s - bound) stays within [2^-120, 1]): no running
  maximum and no rescaling (``MAX_BOUND``); tiles with larger logits take the usual online-softmax
  loop inside the same program;
- with the head padded to the next tensor-core width (8 -> 16), the padding column of V is set to
  one, so the row sums of P come out of the P @ V product on the tensor cores instead of a
  per-element reduction (``ROWSUM_MMA``);
- ragged key lengths are masked only in the last key tile;
- the backward pass recomputes P once per (query tile, key tile) pair: one program owns a key
  tile, accumulates dK and dV in registers and adds its dQ share with atomics (float32), so dQ is
  not bit-for-bit deterministic between runs.

The softmax scales are cast to float32 inside the kernels: ``torch.compile``'s launcher passes
Python floats as float64 (and a float ``tl.constexpr`` came out wrong under it).

The ops are registered through ``torch.library.triton_op`` so that ``torch.compile`` traces them
without a graph break and CUDA graphs capture them. Import this module only where Triton is
installed; :func:`condiff.nn.attention.triton_available` says whether it can run. Measured
figures and the tile sweep: docs/NOTES.md, ``scripts/attention_bench.py``.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

LOG2E = 1.4426950408889634


def _pad_head(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


@triton.jit
def _fwd_inner(
    acc,
    m_i,
    l_i,
    q,
    k_ptrs,
    v_ptrs,
    skn,
    svn,
    start,
    stop,
    N,
    offs_n,
    d_ok,
    qk_scale,
    BN: tl.constexpr,
    ROWSUM_MMA: tl.constexpr,
    FIXED_MAX: tl.constexpr,
    MASKED: tl.constexpr,
):
    """Key tiles [start, stop): online softmax (or a fixed per-row offset, FIXED_MAX)."""
    for start_n in range(start, stop, BN):
        if MASKED:
            n_ok = (start_n + offs_n) < N
            k = tl.load(k_ptrs + start_n * skn, mask=d_ok[:, None] & n_ok[None, :], other=0.0)
            s = tl.where(n_ok[None, :], tl.dot(q, k), float("-inf"))
            # Padding columns of V read as one (MMA row sums); missing keys have p = 0.
            v = tl.load(
                v_ptrs + start_n * svn,
                mask=d_ok[None, :] & n_ok[:, None],
                other=1.0 if ROWSUM_MMA else 0.0,
            )
        else:
            k = tl.load(k_ptrs + start_n * skn, mask=d_ok[:, None], other=0.0)
            s = tl.dot(q, k)
            v = tl.load(
                v_ptrs + start_n * svn, mask=d_ok[None, :], other=1.0 if ROWSUM_MMA else 0.0
            )
        if FIXED_MAX:
            p = tl.math.exp2(s * qk_scale - m_i[:, None])
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.math.exp2(s * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            acc = acc * alpha[:, None]
            if not ROWSUM_MMA:
                l_i = l_i * alpha
            m_i = m_new
        if not ROWSUM_MMA:
            l_i += tl.sum(p, 1)
        acc = tl.dot(p.to(v.dtype), v, acc)
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(
    Q,
    K,
    V,
    Out,
    LSE,
    KNORM,
    sqb,
    sqh,
    sqn,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sob,
    soh,
    son,
    H,
    N,
    n_full,
    qk_scale,
    D: tl.constexpr,
    DP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    ROWSUM_MMA: tl.constexpr,
    MAX_BOUND: tl.constexpr,
    STORE_LSE: tl.constexpr,
):
    qk_scale = tl.cast(qk_scale, tl.float32)  # torch.compile's launcher passes floats as float64
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = tl.arange(0, BN)
    offs_d = tl.arange(0, DP)
    d_ok = offs_d < D
    q = tl.load(
        Q + b * sqb + h * sqh + offs_m[:, None] * sqn + offs_d[None, :],
        mask=(offs_m[:, None] < N) & d_ok[None, :],
        other=0.0,
    )
    # K is read transposed, (DP, BN), so that the score tile is a plain q @ k.
    k_ptrs = K + b * skb + h * skh + offs_n[None, :] * skn + offs_d[:, None]
    v_ptrs = V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :]
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, DP], tl.float32)
    # Whole key tiles (n_full = N rounded down to BN), then the ragged rest under a mask.
    m_i = tl.full([BM], float("-inf"), tl.float32)
    fixed = False
    if MAX_BOUND:
        # Cauchy-Schwarz: every score of row i is within +-|q_i| max_j |k_j| (log2 units: bound).
        # Where all bounds of the tile are <= 60, p = exp2(s - bound) lies in [2^-120, 1]: no
        # running max is needed, and nothing under- or overflows.
        qf = q.to(tl.float32)
        bound = tl.sqrt(tl.sum(qf * qf, 1)) * tl.load(KNORM + bh) * qk_scale
        fixed = tl.max(bound, 0) <= 60.0
        if fixed:
            m_i = bound
            acc, m_i, l_i = _fwd_inner(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, 0, n_full, N, offs_n, d_ok,
                qk_scale, BN, ROWSUM_MMA, True, False,
            )  # fmt: skip
            acc, m_i, l_i = _fwd_inner(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, n_full, N, N, offs_n, d_ok,
                qk_scale, BN, ROWSUM_MMA, True, True,
            )  # fmt: skip
    if not fixed:
        acc, m_i, l_i = _fwd_inner(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, 0, n_full, N, offs_n, d_ok, qk_scale,
            BN, ROWSUM_MMA, False, False,
        )  # fmt: skip
        acc, m_i, l_i = _fwd_inner(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, n_full, N, N, offs_n, d_ok, qk_scale,
            BN, ROWSUM_MMA, False, True,
        )  # fmt: skip
    if ROWSUM_MMA:
        l_i = tl.sum(tl.where((offs_d == D)[None, :], acc, 0.0), 1)
    out = acc / l_i[:, None]
    m_ok = offs_m < N
    tl.store(
        Out + b * sob + h * soh + offs_m[:, None] * son + offs_d[None, :],
        out.to(Out.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )
    if STORE_LSE:
        tl.store(LSE + bh * N + offs_m, m_i + tl.math.log2(l_i), mask=m_ok)


@triton.jit
def _attn_bwd(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
    DK,
    DV,
    sqb,
    sqh,
    sqn,
    skb,
    skh,
    skn,
    svb,
    svh,
    svn,
    sdob,
    sdoh,
    sdon,
    H,
    N,
    qk_scale,
    sm_scale,
    D: tl.constexpr,
    DP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    DELTA_MMA: tl.constexpr,
):
    # One program per key tile; loops over all query tiles. DQ, DK, DV are contiguous (B, H, N, D)
    # float32 (DQ, accumulated with atomics) and input-dtype (DK, DV).
    qk_scale = tl.cast(qk_scale, tl.float32)
    sm_scale = tl.cast(sm_scale, tl.float32)
    pid_n = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_n = pid_n * BN + tl.arange(0, BN)
    offs_m = tl.arange(0, BM)
    offs_d = tl.arange(0, DP)
    d_ok = offs_d < D
    n_ok = offs_n < N
    kv_mask = n_ok[:, None] & d_ok[None, :]
    k = tl.load(
        K + b * skb + h * skh + offs_n[:, None] * skn + offs_d[None, :], mask=kv_mask, other=0.0
    )
    v = tl.load(
        V + b * svb + h * svh + offs_n[:, None] * svn + offs_d[None, :], mask=kv_mask, other=0.0
    )
    if DELTA_MMA:  # V's padding column D is one and dO's is -delta: v @ dO^T gives dP - delta
        v = tl.where((offs_d == D)[None, :], 1.0, v).to(k.dtype)
    dk = tl.zeros([BN, DP], tl.float32)
    dv = tl.zeros([BN, DP], tl.float32)
    # Q and dO read transposed, (DP, BM).
    qT_ptrs = Q + b * sqb + h * sqh + offs_m[None, :] * sqn + offs_d[:, None]
    doT_ptrs = DO + b * sdob + h * sdoh + offs_m[None, :] * sdon + offs_d[:, None]
    dq_ptrs = DQ + bh * N * D + offs_m[:, None] * D + offs_d[None, :]
    for start_m in range(0, N, BM):
        m_ok = (start_m + offs_m) < N
        qd_mask = d_ok[:, None] & m_ok[None, :]
        qT = tl.load(qT_ptrs + start_m * sqn, mask=qd_mask, other=0.0)
        doT = tl.load(doT_ptrs + start_m * sdon, mask=qd_mask, other=0.0)
        # Missing query rows: lse = +inf makes their P zero, delta = 0 their dS zero.
        lse = tl.load(LSE + bh * N + start_m + offs_m, mask=m_ok, other=float("inf"))
        delta = tl.load(DELTA + bh * N + start_m + offs_m, mask=m_ok, other=0.0)
        sT = tl.dot(k, qT)  # (BN, BM)
        pT = tl.math.exp2(sT * qk_scale - lse[None, :])
        if DELTA_MMA:
            doT = tl.where((offs_d == D)[:, None], -delta[None, :], doT).to(qT.dtype)
            dsT = (pT * tl.dot(v, doT)).to(qT.dtype)
        else:
            dsT = (pT * (tl.dot(v, doT) - delta[None, :])).to(qT.dtype)
        dv += tl.dot(pT.to(doT.dtype), tl.trans(doT))
        dk += tl.dot(dsT, tl.trans(qT))
        # Missing key rows have k = 0, so they add nothing to dQ.
        dq = tl.dot(tl.trans(dsT), k) * sm_scale  # (BM, DP)
        tl.atomic_add(dq_ptrs + start_m * D, dq, mask=m_ok[:, None] & d_ok[None, :], sem="relaxed")
    out = bh * N * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


# Tile shapes (BM, BN, num_warps, num_stages) for the forward and backward kernels; chosen by
# `scripts/attention_bench.py` on an H200 and overridable with `configure`.
_CONFIG = {
    "fwd": (128, 32, 4, 2),
    "bwd": (32, 256, 4, 3),
    "rowsum_mma": True,
    "max_bound": True,
    "delta_mma": False,
}


def configure(**options) -> None:
    """Override tile shapes ``fwd=``/``bwd=`` (block_m, block_n, num_warps, num_stages) and the
    ``rowsum_mma``, ``max_bound`` and ``delta_mma`` switches (see the module docstring)."""
    for key, value in options.items():
        if key not in _CONFIG:
            raise ValueError(f"unknown option {key!r}; expected one of {sorted(_CONFIG)}")
        _CONFIG[key] = tuple(value) if isinstance(value, (list, tuple)) else bool(value)


@triton_op("condiff::small_head_attn_fwd", mutates_args={})
def _fwd_op(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    b, h, n, d = q.shape
    dp = _pad_head(d)
    # (B, N, H, D) storage: the caller's transpose back to (B, N, C) is then free.
    o = torch.empty((b, n, h, d), device=q.device, dtype=q.dtype).transpose(1, 2)
    lse = torch.empty((b, h, n), device=q.device, dtype=torch.float32)
    bm, bn, warps, stages = _CONFIG["fwd"]
    rowsum = bool(_CONFIG["rowsum_mma"]) and dp > d
    bound = bool(_CONFIG["max_bound"])
    # Largest key norm per (batch, head), for the Cauchy-Schwarz score bound.
    knorm = k.float().norm(dim=-1).amax(-1).contiguous() if bound else lse
    grid = (triton.cdiv(n, bm), b * h)
    wrap_triton(_attn_fwd)[grid](
        q, k, v, o, lse, knorm,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        o.stride(0), o.stride(1), o.stride(2),
        h, n, (n // bn) * bn, LOG2E / math.sqrt(d),
        D=d, DP=dp, BM=bm, BN=bn, ROWSUM_MMA=rowsum, MAX_BOUND=bound, STORE_LSE=True,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return o, lse


@triton_op("condiff::small_head_attn_bwd", mutates_args={})
def _bwd_op(
    q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, do: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    b, h, n, d = q.shape
    dp = _pad_head(d)
    delta = (o.float() * do.float()).sum(-1).contiguous()  # (B, H, N)
    dq = torch.zeros((b, h, n, d), device=q.device, dtype=torch.float32)
    dk = torch.empty((b, h, n, d), device=q.device, dtype=q.dtype)
    dv = torch.empty((b, h, n, d), device=q.device, dtype=q.dtype)
    bm, bn, warps, stages = _CONFIG["bwd"]
    grid = (triton.cdiv(n, bn), b * h)
    wrap_triton(_attn_bwd)[grid](
        q, k, v, do, lse, delta, dq, dk, dv,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        do.stride(0), do.stride(1), do.stride(2),
        h, n, LOG2E / math.sqrt(d), 1.0 / math.sqrt(d),
        D=d, DP=dp, BM=bm, BN=bn, DELTA_MMA=bool(_CONFIG["delta_mma"]) and dp > d,
        num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return dq.to(q.dtype), dk, dv


def _setup_context(ctx, inputs, output) -> None:
    q, k, v = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)


def _backward(ctx, do: Tensor, _dlse: Tensor):
    q, k, v, o, lse = ctx.saved_tensors
    return _bwd_op(q, k, v, o, lse, do)


_fwd_op.register_autograd(_backward, setup_context=_setup_context)


def small_head_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """softmax(q k^T / sqrt(d)) v for (B, heads, N, d) CUDA tensors, d <= 32, fp16 or bf16."""
    return _fwd_op(q, k, v)[0]


def supports(q: Tensor) -> bool:
    """Whether the kernel applies to these inputs (CUDA, half precision, head size 8 to 32)."""
    return (
        q.is_cuda
        and q.dtype in (torch.float16, torch.bfloat16)
        and q.dim() == 4
        and 8 <= q.shape[-1] <= 32
        and q.stride(-1) == 1
    )
