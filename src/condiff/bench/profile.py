"""Where a training step's GPU time goes, by kernel family (``condiff bench --profile``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from condiff.bench.rows import BenchRow

# Kernel-name patterns, first match wins.
KERNEL_FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("attn", "fmha", "flash", "cudnn_generated_fort_native_sdpa", "sdpa")),
    ("convolution", ("conv", "fprop", "dgrad", "wgrad", "implicit_gemm", "winograd")),
    ("matmul (linear, 1x1)", ("gemm", "nvjet", "cutlass", "xmma", "cublas")),
    ("group norm", ("group_norm", "groupnorm", "native_group")),
    ("optimizer", ("adam", "multi_tensor")),
    ("fused elementwise (inductor)", ("triton_",)),
    ("elementwise / reduce / copy", ("elementwise", "reduce", "copy", "cat", "fill", "index")),
)


def kernel_family(name: str) -> str:
    low = name.lower()
    for family, keys in KERNEL_FAMILIES:
        if any(k in low for k in keys):
            return family
    return "other"


def profile_families(step: Callable[[], None], device: torch.device, steps: int = 3) -> dict:
    """GPU time (ms per step) of ``step`` by kernel family, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    if device.type != "cuda":
        return {}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize(device)
    fam: dict[str, float] = {}
    for evt in prof.key_averages():
        us = getattr(evt, "device_time_total", None) or getattr(evt, "cuda_time_total", 0)
        if us and evt.device_type == torch.autograd.DeviceType.CUDA:
            f = kernel_family(evt.key)
            fam[f] = fam.get(f, 0.0) + us / 1000 / steps
    return dict(sorted(fam.items(), key=lambda kv: -kv[1]))


def format_profiles(rows: list[BenchRow]) -> str:
    rows = [r for r in rows if r.profile]
    if not rows:
        return ""
    fams = list(dict.fromkeys(f for r in rows for f in r.profile or {}))
    head = f"{'training step, GPU ms by kernel family':<40}" + "".join(
        f"{r.variant[:28]:>30}" for r in rows
    )
    lines = [head, "-" * len(head)]
    for f in [*fams, "total"]:
        cells = []
        for r in rows:
            prof = r.profile or {}
            tot = sum(prof.values())
            v = tot if f == "total" else prof.get(f, 0.0)
            cells.append(f"{v:>10.2f} ms ({100 * v / tot:>4.1f}%)".rjust(30))
        lines.append(f"{f:<40}" + "".join(cells))
    return "\n".join(lines)
