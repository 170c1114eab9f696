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
  per-element reduction (``ROWSUM_MMA``); the padding is done in memory first (a contiguous
  (B, H, N, 16) copy), so the kernels read whole aligned rows asynchronously instead of 2-byte
  loads from ``AttentionBlock``'s strided projections;
- the forward's exponentials are split between the special-function unit and the FMA units
  (every other key tile through ``_exp2_fma``, a cubic with the exponent added in integer bits:
  ``FMA_EXP``); P and dS can go to bf16 by truncation, one byte permute per pair (``TRUNC``,
  off: no faster on an H200, and biased where the row sums are not taken from the same P);
- the forward and the dQ pass mask ragged key lengths only in the last key tile;
- the backward pass: one program per key tile recomputes P once per (query tile, key tile) pair
  and accumulates dK and dV in registers; dQ comes from a pass of its own, one program per query
  tile that recomputes P and dS and keeps dQ in registers (``dq_pass``: 4.6-7.0% faster than
  float32 atomics from the key-tile programs at the recipe's 4,096-token level on an H100, the
  recipe's whole step 2.9%, and deterministic; the atomic path is kept behind ``dq_pass=False``).

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
import torch.nn.functional as F
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

LOG2E = 1.4426950408889634


def _pad_head(d: int) -> int:
    return max(16, triton.next_power_of_2(d))


def _trunc(q: Tensor) -> int:
    """The truncation mode for these inputs: bf16 only; the byte permute is PTX (NVIDIA)."""
    if q.dtype != torch.bfloat16:
        return 0
    return 1 if _CONFIG["trunc"] == 2 and torch.version.hip else int(_CONFIG["trunc"])


def _padded(x: Tensor, dp: int, value: float = 0.0) -> Tensor:
    """``x`` (B, H, N, D) as a contiguous (B, H, N, dp) copy, the new columns set to ``value``:
    the kernels then read whole aligned rows (wide, unmasked, asynchronous loads) instead of
    2-byte loads from the strided, 8-wide head of ``AttentionBlock``'s projections."""
    d = x.shape[-1]
    # (heads of 16 or 32 are read in place: a contiguous copy measured slower there)
    return F.pad(x, (0, dp - d), value=value).contiguous() if dp > d else x


def _strides(*tensors: Tensor) -> list[int]:
    """The batch, head and token strides of each (B, H, N, D) tensor, in the kernels' order."""
    return [t.stride(i) for t in tensors for i in range(3)]


@triton.jit
def _tile_ptrs(X, b, h, sxb, sxh, sxn, offs_rows, offs_d, TRANS: tl.constexpr):
    """Pointers to the rows ``offs_rows`` of (batch b, head h) of a (B, H, N, D) tensor with
    strides ``sxb, sxh, sxn`` (the last dimension contiguous): (rows, DP), or (DP, rows) with
    TRANS."""
    base = X + b * sxb + h * sxh
    if TRANS:
        ptrs = base + offs_rows[None, :] * sxn + offs_d[:, None]
    else:
        ptrs = base + offs_rows[:, None] * sxn + offs_d[None, :]
    return ptrs


@triton.jit
def _exp2_fma(x):
    """exp2 on the FMA and integer units instead of the special-function unit (where the
    forward's exponentials queue), for -126 <= x <= 0: x = j + f with j an integer and
    |f| <= 1/2 (adding 1.5 * 2^23 rounds x into the low mantissa bits of t), 2^f from a cubic,
    and j added to its exponent bits. The cubic is fitted to the relative error on [-1/2, 1/2]
    (7.7e-5 at most, below bf16's 2^-9)."""
    t = x + 12582912.0
    f = x - (t - 12582912.0)
    p = ((0.05508876703270122 * f + 0.2426046559080518) * f + 0.6932762833317916) * f
    p = p + 0.9999289048197653
    # t's bits are 0x4B400000 + j; shifted by 23 only j << 23 is left (mod 2^32).
    bits = p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _half(x, dtype: tl.constexpr, TRUNC: tl.constexpr):
    """float32 -> the kernel's half type. TRUNC (bf16 only) keeps the top 16 bits (rounds toward
    zero) with integer ops (1) or one byte permute per pair (2), instead of the conversion
    instruction, which shares the special-function unit's issue rate with exp2."""
    if TRUNC == 1:
        return (x.to(tl.uint32, bitcast=True) >> 16).to(tl.uint16).to(tl.bfloat16, bitcast=True)
    elif TRUNC == 2:
        return tl.inline_asm_elementwise(
            "prmt.b32 $0, $1, $2, 0x7632;", "=r,r,r", [x], dtype=tl.bfloat16, is_pure=True, pack=2
        )
    else:
        return x.to(dtype)


@triton.jit
def _fwd_tile(
    acc,
    m_i,
    l_i,
    q,
    k_ptrs,
    v_ptrs,
    skn,
    svn,
    start_n,
    N,
    offs_n,
    qk_scale,
    ROWSUM_MMA: tl.constexpr,
    FIXED_MAX: tl.constexpr,
    MASKED: tl.constexpr,
    FMA_EXP: tl.constexpr,
    TRUNC: tl.constexpr,
):
    """One key tile: online softmax (or a fixed per-row offset, FIXED_MAX)."""
    if MASKED:
        n_ok = (start_n + offs_n) < N
        k = tl.load(k_ptrs + start_n * skn, mask=n_ok[None, :], other=0.0)
        s = tl.where(n_ok[None, :], tl.dot(q, k), float("-inf"))
        v = tl.load(v_ptrs + start_n * svn, mask=n_ok[:, None], other=0.0)  # missing: p = 0
    else:
        k = tl.load(k_ptrs + start_n * skn)
        s = tl.dot(q, k)
        v = tl.load(v_ptrs + start_n * svn)
    if FIXED_MAX:
        if FMA_EXP:  # only unmasked tiles under the fixed offset: s * scale - m in [-120, 0]
            p = _exp2_fma(s * qk_scale - m_i[:, None])
        else:
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
    acc = tl.dot(_half(p, v.dtype, TRUNC), v, acc)
    return acc, m_i, l_i


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
    qk_scale,
    BN: tl.constexpr,
    ROWSUM_MMA: tl.constexpr,
    FIXED_MAX: tl.constexpr,
    MASKED: tl.constexpr,
    PAIRS: tl.constexpr,
    TRUNC: tl.constexpr,
):
    """Key tiles [start, stop). PAIRS: two tiles a turn, the second with its exponentials on the
    FMA units (``_exp2_fma``), so both units work; (stop - start) must divide by 2 BN."""
    if PAIRS:
        for start_n in range(start, stop, 2 * BN):
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, start_n, N, offs_n, qk_scale,
                ROWSUM_MMA, FIXED_MAX, MASKED, False, TRUNC,
            )  # fmt: skip
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, start_n + BN, N, offs_n,
                qk_scale, ROWSUM_MMA, FIXED_MAX, MASKED, True, TRUNC,
            )  # fmt: skip
    else:
        for start_n in range(start, stop, BN):
            acc, m_i, l_i = _fwd_tile(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, start_n, N, offs_n, qk_scale,
                ROWSUM_MMA, FIXED_MAX, MASKED, False, TRUNC,
            )  # fmt: skip
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
    n_pairs,
    n_full,
    qk_scale,
    D: tl.constexpr,
    DP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    ROWSUM_MMA: tl.constexpr,
    MAX_BOUND: tl.constexpr,
    STORE_LSE: tl.constexpr,
    FMA_EXP: tl.constexpr,
    TRUNC: tl.constexpr,
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
        _tile_ptrs(Q, b, h, sqb, sqh, sqn, offs_m, offs_d, False),
        mask=(offs_m[:, None] < N),
        other=0.0,
    )
    # K is read transposed, (DP, BN), so that the score tile is a plain q @ k.
    k_ptrs = _tile_ptrs(K, b, h, skb, skh, skn, offs_n, offs_d, True)
    v_ptrs = _tile_ptrs(V, b, h, svb, svh, svn, offs_n, offs_d, False)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, DP], tl.float32)
    # Whole key tiles (n_full = N rounded down to BN; n_pairs down to 2 BN, or 0 without
    # FMA_EXP), then the ragged rest under a mask.
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
            if FMA_EXP:
                acc, m_i, l_i = _fwd_inner(
                    acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, 0, n_pairs, N, offs_n,
                    qk_scale, BN, ROWSUM_MMA, True, False, True, TRUNC,
                )  # fmt: skip
            acc, m_i, l_i = _fwd_inner(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, n_pairs, n_full, N, offs_n,
                qk_scale, BN, ROWSUM_MMA, True, False, False, TRUNC,
            )  # fmt: skip
            acc, m_i, l_i = _fwd_inner(
                acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, n_full, N, N, offs_n,
                qk_scale, BN, ROWSUM_MMA, True, True, False, TRUNC,
            )  # fmt: skip
    if not fixed:
        acc, m_i, l_i = _fwd_inner(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, 0, n_full, N, offs_n, qk_scale,
            BN, ROWSUM_MMA, False, False, False, TRUNC,
        )  # fmt: skip
        acc, m_i, l_i = _fwd_inner(
            acc, m_i, l_i, q, k_ptrs, v_ptrs, skn, svn, n_full, N, N, offs_n, qk_scale,
            BN, ROWSUM_MMA, False, True, False, TRUNC,
        )  # fmt: skip
    if ROWSUM_MMA:
        l_i = tl.sum(tl.where((offs_d == D)[None, :], acc, 0.0), 1)
    out = acc / l_i[:, None]
    m_ok = offs_m < N
    tl.store(
        _tile_ptrs(Out, b, h, sob, soh, son, offs_m, offs_d, False),
        out.to(Out.dtype.element_ty),
        mask=m_ok[:, None] & d_ok[None, :],
    )
    if STORE_LSE:
        tl.store(LSE + bh * N + offs_m, m_i + tl.math.log2(l_i), mask=m_ok)


@triton.jit
def _bwd_tile(
    dk,
    dv,
    k,
    v,
    qT_ptrs,
    doT_ptrs,
    dq_ptrs,
    LSE,
    DELTA,
    bh,
    start_m,
    sqn,
    sdon,
    N,
    offs_m,
    offs_d,
    d_ok,
    qk_scale,
    sm_scale,
    D: tl.constexpr,
    DELTA_MMA: tl.constexpr,
    FMA_EXP: tl.constexpr,
    TRUNC: tl.constexpr,
    DQ_ATOMIC: tl.constexpr,
):
    """One query tile against the program's key tile: dK, dV accumulated, dQ added atomically
    (DQ_ATOMIC; else :func:`_attn_bwd_dq` computes dQ in a pass of its own)."""
    m_ok = (start_m + offs_m) < N
    qT = tl.load(qT_ptrs + start_m * sqn, mask=m_ok[None, :], other=0.0)
    doT = tl.load(doT_ptrs + start_m * sdon, mask=m_ok[None, :], other=0.0)
    # Missing query rows: lse = +inf makes their P zero, delta = 0 their dS zero.
    lse = tl.load(LSE + bh * N + start_m + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * N + start_m + offs_m, mask=m_ok, other=0.0)
    sT = tl.dot(k, qT)  # (BN, BM)
    if FMA_EXP:  # (only whole query tiles) scores sit at or below the row's log-sum-exp
        pT = _exp2_fma(tl.maximum(sT * qk_scale - lse[None, :], -126.0))
    else:
        pT = tl.math.exp2(sT * qk_scale - lse[None, :])
    if DELTA_MMA:
        doT = tl.where((offs_d == D)[:, None], -delta[None, :], doT).to(qT.dtype)
        dsT = _half(pT * tl.dot(v, doT), qT.dtype, TRUNC)
    else:
        dsT = _half(pT * (tl.dot(v, doT) - delta[None, :]), qT.dtype, TRUNC)
    dv += tl.dot(_half(pT, doT.dtype, TRUNC), tl.trans(doT))
    dk += tl.dot(dsT, tl.trans(qT))
    if DQ_ATOMIC:
        # Missing key rows have k = 0, so they add nothing to dQ.
        dq = tl.dot(tl.trans(dsT), k) * sm_scale  # (BM, DP)
        tl.atomic_add(dq_ptrs + start_m * D, dq, mask=m_ok[:, None] & d_ok[None, :], sem="relaxed")
    return dk, dv


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
    m_pairs,
    qk_scale,
    sm_scale,
    D: tl.constexpr,
    DP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    DELTA_MMA: tl.constexpr,
    FMA_EXP: tl.constexpr,
    TRUNC: tl.constexpr,
    DQ_ATOMIC: tl.constexpr,
):
    # One program per key tile; loops over all query tiles (FMA_EXP: in pairs up to m_pairs, the
    # second of each pair with its exponentials on the FMA units). DQ, DK, DV are contiguous
    # (B, H, N, D) float32 (DQ, accumulated with atomics; unused without DQ_ATOMIC) and
    # input-dtype (DK, DV).
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
    row_ok = n_ok[:, None]
    # Missing key rows (a ragged last tile) read as zeros: a masked load without ``other`` is
    # undefined, and those rows' k enters dQ (dS^T k) and their v enters dP.
    k = tl.load(_tile_ptrs(K, b, h, skb, skh, skn, offs_n, offs_d, False), mask=row_ok, other=0.0)
    v = tl.load(_tile_ptrs(V, b, h, svb, svh, svn, offs_n, offs_d, False), mask=row_ok, other=0.0)
    if DELTA_MMA:  # V's padding column D is one and dO's is -delta: v @ dO^T gives dP - delta
        v = tl.where((offs_d == D)[None, :], 1.0, v).to(k.dtype)
    dk = tl.zeros([BN, DP], tl.float32)
    dv = tl.zeros([BN, DP], tl.float32)
    # Q and dO read transposed, (DP, BM).
    qT_ptrs = _tile_ptrs(Q, b, h, sqb, sqh, sqn, offs_m, offs_d, True)
    doT_ptrs = _tile_ptrs(DO, b, h, sdob, sdoh, sdon, offs_m, offs_d, True)
    dq_ptrs = DQ + bh * N * D + offs_m[:, None] * D + offs_d[None, :]
    if FMA_EXP:
        for start_m in range(0, m_pairs, 2 * BM):
            dk, dv = _bwd_tile(
                dk, dv, k, v, qT_ptrs, doT_ptrs, dq_ptrs, LSE, DELTA, bh, start_m, sqn, sdon, N,
                offs_m, offs_d, d_ok, qk_scale, sm_scale, D, DELTA_MMA, False, TRUNC, DQ_ATOMIC,
            )  # fmt: skip
            dk, dv = _bwd_tile(
                dk, dv, k, v, qT_ptrs, doT_ptrs, dq_ptrs, LSE, DELTA, bh, start_m + BM, sqn, sdon,
                N, offs_m, offs_d, d_ok, qk_scale, sm_scale, D, DELTA_MMA, True, TRUNC, DQ_ATOMIC,
            )  # fmt: skip
    for start_m in range(m_pairs, N, BM):
        dk, dv = _bwd_tile(
            dk, dv, k, v, qT_ptrs, doT_ptrs, dq_ptrs, LSE, DELTA, bh, start_m, sqn, sdon, N,
            offs_m, offs_d, d_ok, qk_scale, sm_scale, D, DELTA_MMA, False, TRUNC, DQ_ATOMIC,
        )  # fmt: skip
    out = bh * N * D + offs_n[:, None] * D + offs_d[None, :]
    tl.store(DK + out, (dk * sm_scale).to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + out, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def _dq_tile(
    dq, q, do, lse, delta, k_ptrs, v_ptrs, start_n, skn, svn, N, offs_n, qk_scale,
    MASK: tl.constexpr, FMA_EXP: tl.constexpr, TRUNC: tl.constexpr,
):  # fmt: skip
    """One key tile against the dQ pass's query tile: dS K accumulated into dQ. MASK: the ragged
    last key tile, whose missing rows read as zeros (their v adds nothing to dP, their k nothing
    to dQ); FMA_EXP: its exponentials on the FMA units (scores sit at or below the row's lse)."""
    if MASK:
        n_ok = (start_n + offs_n) < N
        k = tl.load(k_ptrs + start_n * skn, mask=n_ok[:, None], other=0.0)
        v = tl.load(v_ptrs + start_n * svn, mask=n_ok[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs + start_n * skn)
        v = tl.load(v_ptrs + start_n * svn)
    s = tl.dot(q, tl.trans(k)) * qk_scale - lse[:, None]  # (BM, BN)
    p = _exp2_fma(tl.maximum(s, -126.0)) if FMA_EXP else tl.math.exp2(s)
    ds = _half(p * (tl.dot(do, tl.trans(v)) - delta[:, None]), q.dtype, TRUNC)
    return dq + tl.dot(ds, k)


@triton.jit
def _attn_bwd_dq(
    Q,
    K,
    V,
    DO,
    LSE,
    DELTA,
    DQ,
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
    n_pairs,
    n_full,
    qk_scale,
    sm_scale,
    D: tl.constexpr,
    DP: tl.constexpr,
    BM: tl.constexpr,
    BN: tl.constexpr,
    FMA_EXP: tl.constexpr,
    TRUNC: tl.constexpr,
):
    # dQ without atomics (``dq_pass``): one program per query tile recomputes P and dS against
    # every key tile and accumulates dS K in registers; DQ is contiguous (B, H, N, D), input dtype.
    # Whole key tiles load unmasked (FMA_EXP: in pairs up to n_pairs, the second of each pair
    # with its exponentials on the FMA units), then the ragged last one masked.
    qk_scale = tl.cast(qk_scale, tl.float32)
    sm_scale = tl.cast(sm_scale, tl.float32)
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    offs_m = pid_m * BM + tl.arange(0, BM)
    offs_n = tl.arange(0, BN)
    offs_d = tl.arange(0, DP)
    m_ok = offs_m < N
    rows = m_ok[:, None]
    q = tl.load(_tile_ptrs(Q, b, h, sqb, sqh, sqn, offs_m, offs_d, False), rows, other=0.0)
    do = tl.load(_tile_ptrs(DO, b, h, sdob, sdoh, sdon, offs_m, offs_d, False), rows, other=0.0)
    # Missing query rows: lse = +inf makes their P zero (their dQ is not stored either).
    lse = tl.load(LSE + bh * N + offs_m, mask=m_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * N + offs_m, mask=m_ok, other=0.0)
    k_ptrs = _tile_ptrs(K, b, h, skb, skh, skn, offs_n, offs_d, False)
    v_ptrs = _tile_ptrs(V, b, h, svb, svh, svn, offs_n, offs_d, False)
    dq = tl.zeros([BM, DP], tl.float32)
    if FMA_EXP:
        for start_n in range(0, n_pairs, 2 * BN):
            dq = _dq_tile(
                dq, q, do, lse, delta, k_ptrs, v_ptrs, start_n, skn, svn, N, offs_n, qk_scale,
                False, False, TRUNC,
            )  # fmt: skip
            dq = _dq_tile(
                dq, q, do, lse, delta, k_ptrs, v_ptrs, start_n + BN, skn, svn, N, offs_n,
                qk_scale, False, True, TRUNC,
            )  # fmt: skip
    for start_n in range(n_pairs, n_full, BN):
        dq = _dq_tile(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, start_n, skn, svn, N, offs_n, qk_scale,
            False, False, TRUNC,
        )  # fmt: skip
    for start_n in range(n_full, N, BN):
        dq = _dq_tile(
            dq, q, do, lse, delta, k_ptrs, v_ptrs, start_n, skn, svn, N, offs_n, qk_scale,
            True, False, TRUNC,
        )  # fmt: skip
    out = bh * N * D + offs_m[:, None] * D + offs_d[None, :]
    tl.store(DQ + out, (dq * sm_scale).to(DQ.dtype.element_ty), mask=m_ok[:, None] & (offs_d < D))


# Tile shapes (BM, BN, num_warps, num_stages) for the forward and backward kernels; chosen by
# `scripts/attention_bench.py` on an H200 and overridable with `configure`.
_CONFIG = {
    "fwd": (128, 32, 4, 2),
    "bwd": (32, 256, 4, 3),
    "dq": (64, 64, 4, 2),  # the dQ pass (``dq_pass``): best of four tiles on an H100 (session 23)
    "rowsum_mma": True,
    "max_bound": True,
    "delta_mma": False,
    "fma_exp": True,  # forward: half the exponentials on the FMA units (``_exp2_fma``)
    "fma_exp_bwd": False,  # the same in the backward (measured no faster there)
    "fma_exp_dq": False,  # the same in the dQ pass (4.6% slower there, session 24)
    "dq_tail_mask": True,  # the dQ pass masks only the ragged last key tile (False: every one)
    # bf16 P and dS by truncation: 0 off, 1 integer ops, 2 byte permute (``_half``); measured no
    # faster, and biased where the row sums are not taken from the same truncated P
    "trunc": 0,
    # dQ in a pass of its own (``_attn_bwd_dq``: P and dS recomputed per query tile) instead of
    # float32 atomics from the key-tile programs: fwd+bwd 22.48 against 23.58 ms at
    # (128, 8, 4096, 8) and 2.48 against 2.57 at (128, 8, 1024, 16), bf16, H100, one run
    # (docs/bench/speed/s23-attn-dqpass-h100.txt); 22.07 against 23.73 in session 24's run, the
    # recipe's compiled step 1,555 against 1,511 img/s (s24-attn-dq-levers-h100.txt,
    # s24-step-dqpass-h100.txt)
    "dq_pass": True,
}


def configure(**options) -> None:
    """Override tile shapes ``fwd=``/``bwd=``/``dq=`` (the dQ pass's; block_m, block_n,
    num_warps, num_stages) and the ``rowsum_mma``, ``max_bound``, ``delta_mma``, ``fma_exp``,
    ``fma_exp_bwd``, ``fma_exp_dq``, ``trunc``, ``dq_pass`` and ``dq_tail_mask`` switches (see
    the module docstring)."""
    for key, value in options.items():
        if key not in _CONFIG:
            raise ValueError(f"unknown option {key!r}; expected one of {sorted(_CONFIG)}")
        if isinstance(value, (list, tuple)):
            _CONFIG[key] = tuple(value)
        elif key == "trunc":
            if value not in (0, 1, 2):
                raise ValueError(f"trunc must be 0, 1 or 2, got {value!r}")
            _CONFIG[key] = int(value)
        else:
            _CONFIG[key] = bool(value)


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
    fma_exp = bool(_CONFIG["fma_exp"]) and bound
    trunc = _trunc(q)
    # V's padding columns are one: the MMA then yields P's row sums (ROWSUM_MMA).
    q, k, v = _padded(q, dp), _padded(k, dp), _padded(v, dp, 1.0 if rowsum else 0.0)
    grid = (triton.cdiv(n, bm), b * h)
    wrap_triton(_attn_fwd)[grid](
        q, k, v, o, lse, knorm,
        *_strides(q, k, v, o),
        h, n, (n // (2 * bn)) * 2 * bn if fma_exp else 0, (n // bn) * bn, LOG2E / math.sqrt(d),
        D=d, DP=dp, BM=bm, BN=bn, ROWSUM_MMA=rowsum, MAX_BOUND=bound, STORE_LSE=True,
        FMA_EXP=fma_exp, TRUNC=trunc, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return o, lse


@triton_op("condiff::small_head_attn_bwd", mutates_args={})
def _bwd_op(
    q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor, do: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    b, h, n, d = q.shape
    dp = _pad_head(d)
    delta = (o.float() * do.float()).sum(-1).contiguous()  # (B, H, N)
    dq_pass = bool(_CONFIG["dq_pass"])
    if dq_pass:  # written whole by the dQ pass
        dq = torch.empty((b, h, n, d), device=q.device, dtype=q.dtype)
    else:  # float32, accumulated with atomics
        dq = torch.zeros((b, h, n, d), device=q.device, dtype=torch.float32)
    dk = torch.empty((b, h, n, d), device=q.device, dtype=q.dtype)
    dv = torch.empty((b, h, n, d), device=q.device, dtype=q.dtype)
    bm, bn, warps, stages = _CONFIG["bwd"]
    fma_exp = bool(_CONFIG["fma_exp_bwd"])
    trunc = _trunc(q)
    q, k, v, do = (_padded(x, dp) for x in (q, k, v, do))
    grid = (triton.cdiv(n, bn), b * h)
    wrap_triton(_attn_bwd)[grid](
        q, k, v, do, lse, delta, dq, dk, dv,
        *_strides(q, k, v, do),
        h, n, (n // (2 * bm)) * 2 * bm if fma_exp else 0, LOG2E / math.sqrt(d), 1.0 / math.sqrt(d),
        D=d, DP=dp, BM=bm, BN=bn, DELTA_MMA=bool(_CONFIG["delta_mma"]) and dp > d,
        FMA_EXP=fma_exp, TRUNC=trunc, DQ_ATOMIC=not dq_pass, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    if dq_pass:
        bm, bn, warps, stages = _CONFIG["dq"]
        fma_dq = bool(_CONFIG["fma_exp_dq"])
        # Whole key tiles end at n_full (0: every tile masked), their pairs at n_pairs.
        n_full = (n // bn) * bn if _CONFIG["dq_tail_mask"] else 0
        n_pairs = (n_full // (2 * bn)) * 2 * bn if fma_dq else 0
        wrap_triton(_attn_bwd_dq)[(triton.cdiv(n, bm), b * h)](
            q, k, v, do, lse, delta, dq,
            *_strides(q, k, v, do),
            h, n, n_pairs, n_full, LOG2E / math.sqrt(d), 1.0 / math.sqrt(d),
            D=d, DP=dp, BM=bm, BN=bn, FMA_EXP=fma_dq, TRUNC=trunc, num_warps=warps,
            num_stages=stages,
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
