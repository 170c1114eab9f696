"""Benchmark and check condiff's Triton small-head attention against PyTorch's SDPA backends.

Run on a CUDA machine (repo root): ``python3 scripts/attention_bench.py [--quick] [--json F]``.
Prints, from one run: a tile-shape sweep of the Triton forward and backward kernels, correctness
against float64 attention (several shapes, ragged lengths included; gradients too), and a timing
table (forward, forward+backward) for cuDNN, flash, memory-efficient and Triton on the spec's
hardest shape: (16, 8, 14400, 8) in bf16, with q, k, v laid out as ``AttentionBlock`` makes them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from condiff.nn import triton_attention as ta

DEV = torch.device("cuda")


def qkv(b: int, h: int, n: int, d: int, dtype=torch.bfloat16, grad: bool = False):
    """q, k, v as AttentionBlock makes them: (B, N, C) projections viewed as (B, H, N, D)."""
    base = torch.randn(3, b, n, h * d, device=DEV, dtype=dtype, requires_grad=grad)
    views = [base[i].view(b, n, h, d).transpose(1, 2) for i in range(3)]
    return base, views


def ref_attention(q, k, v, heads: int | None = None):
    """float64 attention (query chunks, so 14,400 tokens fit)."""
    q, k, v = (t.double() for t in (q, k, v))
    if heads is not None:
        q, k, v = q[:, :heads], k[:, :heads], v[:, :heads]
    out = torch.empty_like(q)
    for s in range(0, q.shape[2], 2048):
        a = torch.softmax(q[:, :, s : s + 2048] @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
        out[:, :, s : s + 2048] = a @ v
    return out


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def poisoned_call(fn):
    """Fill the caching allocator's free memory with NaN first, so unwritten outputs show."""
    junk = torch.full((256, 2**20), float("nan"), device=DEV)
    del junk
    return fn()


def ms(fn, grad_to_none=None) -> float:
    return triton.testing.do_bench(
        fn, warmup=25, rep=150, grad_to_none=grad_to_none, return_mode="median"
    )


def sweep(shape, quick: bool) -> dict:
    b, h, n, d = shape
    _, (q, k, v) = qkv(b, h, n, d)
    do = torch.randn(b, h, n, d, device=DEV, dtype=q.dtype)
    fwd_tiles = [(128, 64), (128, 32), (256, 64), (128, 128), (64, 64)]
    bwd_tiles = [(64, 128), (32, 128), (64, 64), (128, 128), (32, 256), (64, 256)]
    warps_stages = [(8, 2), (4, 2), (4, 3)] if quick else [(8, 2), (4, 2), (8, 3), (4, 3), (4, 1)]
    res = {"fwd": [], "bwd": []}
    for (bm, bn), (w, st), mb in itertools.product(fwd_tiles, warps_stages, (True, False)):
        ta.configure(fwd=(bm, bn, w, st), max_bound=mb)
        try:
            t = ms(lambda: ta.small_head_attention(q, k, v))
        except Exception as e:
            print(f"fwd {bm}x{bn} w{w} s{st} max_bound={mb}: {type(e).__name__}")
            continue
        res["fwd"].append(((bm, bn, w, st), mb, t))
    res["fwd"].sort(key=lambda r: r[2])
    best_fwd, best_mb, _ = res["fwd"][0]
    ta.configure(fwd=best_fwd, max_bound=best_mb)
    o, lse = ta._fwd_op(q, k, v)
    for (bm, bn), (w, st), dm in itertools.product(bwd_tiles, warps_stages, (True, False)):
        ta.configure(bwd=(bm, bn, w, st), delta_mma=dm)
        try:
            t = ms(lambda: ta._bwd_op(q, k, v, o, lse, do))
        except Exception as e:
            print(f"bwd {bm}x{bn} w{w} s{st} delta_mma={dm}: {type(e).__name__}")
            continue
        res["bwd"].append(((bm, bn, w, st), dm, t))
    res["bwd"].sort(key=lambda r: r[2])
    ta.configure(bwd=res["bwd"][0][0], delta_mma=res["bwd"][0][1])
    print(f"\nTile sweep on {shape} bf16 (median ms; best 8 of each)")
    for key, label, switch in (("fwd", "forward ", "max_bound"), ("bwd", "backward", "delta_mma")):
        print(f"{label} (BM, BN, warps, stages) {switch}  ms")
        for cfg, on, t in res[key][:8]:
            print(f"  {cfg!s:<24} {on!s:<6} {t:7.3f}")
        for flag in (True, False):
            t = min((r[2] for r in res[key] if r[1] is flag), default=float("nan"))
            print(f"  best with {switch}={flag}: {t:.3f}")
    return dict(ta._CONFIG)


def correctness() -> list[dict]:
    print("\nCorrectness against float64 attention (relative L2 error; fresh random inputs)")
    print(
        f"{'shape (B,H,N,D)':<22}{'dtype':<10}{'out':>10}{'dq':>10}{'dk':>10}{'dv':>10}{'cuDNN/flash out':>17}{'finite':>8}"
    )
    rows = []
    shapes = [
        (2, 8, 14400, 8),
        (3, 4, 1000, 8),
        (2, 4, 777, 16),
        (1, 2, 513, 32),
        (2, 8, 3600, 8),
        (1, 1, 17, 8),
        (2, 3, 200, 24),
    ]
    for (b, h, n, d), dtype in itertools.product(shapes, (torch.bfloat16, torch.float16)):
        base, (q, k, v) = qkv(b, h, n, d, dtype, grad=True)
        out = poisoned_call(lambda q=q, k=k, v=v: ta.small_head_attention(q, k, v))
        heads = 2 if n > 4000 else None
        ref = ref_attention(q, k, v, heads)
        o_cmp = out[:, :heads] if heads else out
        e_out = rel(o_cmp, ref)
        stock = F.scaled_dot_product_attention(q, k, v)
        e_stock = rel(stock[:, :heads] if heads else stock, ref)
        finite = bool(torch.isfinite(out).all())
        grads = ["-"] * 3
        if n <= 4000:
            do = torch.randn_like(out)
            out.backward(do)
            g = base.grad.clone()
            qq, kk, vv = (t.detach().double().requires_grad_() for t in (q, k, v))
            ref_attention(qq, kk, vv).backward(do.double())
            grads = [
                rel(g[i].view(b, n, h, d).transpose(1, 2), t.grad)
                for i, t in enumerate((qq, kk, vv))
            ]
            finite = finite and bool(torch.isfinite(g).all())
        rows.append(
            {
                "shape": [b, h, n, d],
                "dtype": str(dtype),
                "out": e_out,
                "grads": grads,
                "stock_out": e_stock,
                "finite": finite,
            }
        )
        gs = "".join(f"{x:>10.2e}" if isinstance(x, float) else f"{x:>10}" for x in grads)
        print(
            f"{(b, h, n, d)!s:<22}{str(dtype)[6:]:<10}{e_out:>10.2e}{gs}{e_stock:>17.2e}{finite!s:>8}"
        )
    return rows


def timing(shape) -> list[dict]:
    b, h, n, d = shape
    base, (q, k, v) = qkv(b, h, n, d, grad=True)
    do = torch.randn(b, h, n, d, device=DEV, dtype=q.dtype)
    kernels = {
        "cuDNN": lambda: sdpa_with(SDPBackend.CUDNN_ATTENTION, q, k, v),
        "flash": lambda: sdpa_with(SDPBackend.FLASH_ATTENTION, q, k, v),
        "mem-efficient": lambda: sdpa_with(SDPBackend.EFFICIENT_ATTENTION, q, k, v),
        "triton (condiff)": lambda: ta.small_head_attention(q, k, v),
    }
    exps = b * h * n * n
    print(f"\nTiming on {shape} bf16, q/k/v strided as in AttentionBlock (median ms, do_bench)")
    print(f"{'kernel':<20}{'fwd ms':>9}{'T exp/s':>9}{'fwd+bwd ms':>12}{'vs cuDNN':>10}")
    rows = []
    for name, fn in kernels.items():
        try:
            with torch.no_grad():
                tf = ms(fn)
            tfb = ms(lambda fn=fn: fn().backward(do), grad_to_none=[base])
        except Exception as e:
            print(f"{name:<20} unavailable: {type(e).__name__}: {str(e)[:80]}")
            continue
        rows.append({"kernel": name, "fwd_ms": tf, "fwd_bwd_ms": tfb})
    ref = next((r for r in rows if r["kernel"] == "cuDNN"), rows[0])
    for r in rows:
        print(
            f"{r['kernel']:<20}{r['fwd_ms']:>9.2f}{exps / r['fwd_ms'] / 1e9:>9.2f}{r['fwd_bwd_ms']:>12.2f}"
            f"{ref['fwd_bwd_ms'] / r['fwd_bwd_ms']:>9.2f}x"
        )
    return rows


def sdpa_with(backend, q, k, v):
    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="smaller tile sweep")
    p.add_argument("--no-sweep", action="store_true", help="use the shipped tile shapes")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    shape = (16, 8, 14400, 8)
    best = None if a.no_sweep else sweep(shape, a.quick)
    print(f"\ntile shapes used: {dict(ta._CONFIG)}")
    corr = correctness()
    tim = timing(shape)
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"best": best, "config": dict(ta._CONFIG), "correctness": corr, "timing": tim},
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
