"""Which SDPA backend makes NaN gradients on this GPU (session 19's lead on the skipped steps).

The 15-minute recipes skip steps whose gradient is NaN from one attention's backward on: in jr15
(colour JPEG, an H100) the NaN is born in encoder.3's or the bottleneck's attention, 8 x 8 = 64
tokens at 64 px crops. cuDNN's SDPA backward, torch 2.11's first choice on Hopper, has known NaN
bugs where the last 128-key tile is half padding (length 64 mod 128) and a row's logsumexp is very
negative (pytorch/pytorch#196678, NVIDIA/cudnn-frontend#1072). This prints, per backend and token
count, whether dq / dk / dv are finite and their errors against float64, for random rows and for
rows whose every logit is about -120 (where dq is ill-conditioned in bf16 in any kernel: its first
channel is a cancelling sum times -680), with PyTorch's own choice of backend beside them.

    python scripts/sdpa_probe.py [--heads 8] [--head-dim 32] [--batch 4] [--time BxHxNxD ...]

It then times one forward + backward per backend at the recipes' attention shapes (a backend
kept off cuDNN must not cost the budget its steps).
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "math": SDPBackend.MATH,
}


def inputs(b: int, h: int, n: int, d: int, negative: bool, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator("cuda").manual_seed(seed)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", generator=g) for _ in range(3))
    if negative:
        q, k = q * 0.1, k * 0.1
        q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(d)
    return [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]


def reference(q, k, v, dout):
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    (p @ v).backward(dout.double())
    return q.grad, k.grad, v.grad


def cell(backend: SDPBackend, q, k, v, dout, ref) -> str:
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    try:
        with sdpa_kernel([backend]):
            out = F.scaled_dot_product_attention(q, k, v)
            out.backward(dout)
    except RuntimeError as e:  # no kernel for these inputs
        return (
            "n/a"
            if "available kernel" in str(e) or "viable backend" in str(e)
            else f"error: {str(e)[:40]}"
        )
    bad = [
        n
        for n, g in zip("qkv", (q.grad, k.grad, v.grad), strict=True)
        if not torch.isfinite(g).all()
    ]
    if bad:
        return "NaN in d" + ",d".join(bad)
    errs = [
        ((g.double() - r).norm() / r.norm().clamp_min(1e-12)).item()
        for g, r in zip((q.grad, k.grad, v.grad), ref, strict=True)
    ]
    return "ok " + " / ".join(f"{e:.0e}" for e in errs)  # dq / dk / dv against float64


def default_choice(q, k, v) -> str:
    """The backend PyTorch picks for these inputs with every backend allowed."""
    try:
        index = int(torch._fused_sdp_choice(q, k, v))
    except (AttributeError, RuntimeError):
        return "?"
    names = {int(b.value): name for name, b in BACKENDS.items()}
    return names.get(index, str(index))


def time_ms(backend: SDPBackend, q, k, v, reps: int = 10) -> str:
    """Median milliseconds of one forward + backward with ``backend`` alone."""
    dout = torch.randn_like(q)
    times = []
    try:
        with sdpa_kernel([backend]):
            for i in range(3 + reps):
                start, end = (
                    torch.cuda.Event(enable_timing=True),
                    torch.cuda.Event(enable_timing=True),
                )
                start.record()
                F.scaled_dot_product_attention(q, k, v).backward(dout)
                end.record()
                end.synchronize()
                if i >= 3:
                    times.append(start.elapsed_time(end))
    except RuntimeError:
        return "n/a"
    return f"{sorted(times)[reps // 2]:.2f}"


def timing_table(shapes: list[str]) -> None:
    """Each ``BxHxNxD`` shape: forward + backward ms per backend (bf16, random rows)."""
    fused = {k: b for k, b in BACKENDS.items() if k != "math"}  # math: never a contender
    print("\n| B x heads x tokens x head size, ms | " + " | ".join(fused) + " |")
    print("|---" * (1 + len(fused)) + "|")
    for shape in shapes:
        b, h, n, d = (int(v) for v in shape.split("x"))
        q, k, v = (
            torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
            for _ in range(3)
        )
        print(f"| {shape} | " + " | ".join(time_ms(be, q, k, v) for be in fused.values()) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 192, 256, 1024, 4096])
    ap.add_argument(
        "--time",
        nargs="*",
        default=["128x8x4096x8", "128x8x1024x16", "128x8x64x32", "128x8x256x24"],
        metavar="BxHxNxD",
        help="shapes to time forward + backward per backend (default: the gray recipe's three "
        "attentions at 64 px crops, batch 128, and the colour recipe's 16 x 16 level)",
    )
    a = ap.parse_args()
    print(
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN "
        f"{torch.backends.cudnn.version()}; batch {a.batch}, {a.heads} heads of {a.head_dim}, bf16"
    )
    print("| tokens | rows | PyTorch's choice | " + " | ".join(BACKENDS) + " |")
    print("|---" * (3 + len(BACKENDS)) + "|")
    for n in a.tokens:
        for negative in (False, True):
            q, k, v = inputs(a.batch, a.heads, n, a.head_dim, negative)
            dout = torch.randn_like(q)
            ref = reference(q, k, v, dout)
            choice = default_choice(q, k, v)
            cells = [cell(b, q, k, v, dout, ref) for b in BACKENDS.values()]
            rows = "logits ~ -120" if negative else "random"
            print(f"| {n} | {rows} | {choice} | " + " | ".join(cells) + " |")
    if a.time:
        timing_table(a.time)


if __name__ == "__main__":
    main()
