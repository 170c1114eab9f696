"""Per-level structure, parameter and FLOP table of a ConditionalUNet (``condiff info``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from condiff.nn import attention as attn_mod
from condiff.nn.unet import ConditionalUNet


@dataclass
class LevelRow:
    name: str
    resolution: int
    in_channels: int
    out_channels: int
    res_blocks: int
    attention: bool
    resample: str
    params: int
    gflop: float  # per image, forward, at initial_img_resolution
    attn_gflop: float  # of which attention's two matrix products


def count_flops(
    model: ConditionalUNet, height: int, width: int
) -> tuple[dict[str, float], dict[str, float]]:
    """FLOPs per module prefix for one image, on the meta device (no memory, no compute).

    Convolutions and linear layers come from PyTorch's FLOP counter; attention's Q K^T and P V
    products are counted here (4 N^2 C per block), since fused SDPA is not counted on every backend.
    """
    meta = ConditionalUNet(**model.config).to("meta")
    attn_flops: dict[str, float] = {}
    current: list[str] = []

    def counting_kernel(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        b, h, n, d = q.shape
        attn_flops[current[-1]] = attn_flops.get(current[-1], 0.0) + 4.0 * b * h * n * n * d
        return torch.empty_like(q)

    hooks = []
    for name, mod in meta.named_modules():
        if mod.__class__.__name__ == "AttentionBlock":
            hooks.append(
                mod.register_forward_pre_hook(lambda m, a, name=name: current.append(name))
            )
    attn_mod.register_kernel("_count", counting_kernel)
    try:
        counter = FlopCounterMode(display=False)
        with counter, attn_mod.attention_kernel("_count"):
            meta(
                torch.empty(1, model.in_img_channels, height, width, device="meta"),
                torch.empty(1, device="meta"),
            )
    finally:
        for h in hooks:
            h.remove()
    counts = {
        k.removeprefix("ConditionalUNet").lstrip("."): float(sum(v.values()))
        for k, v in counter.get_flop_counts().items()
        if k.startswith("ConditionalUNet")
    }
    # The counter reports every module and its parents; keep leaves so prefixes sum once.
    dense = {
        k: v for k, v in counts.items() if k and not any(o.startswith(k + ".") for o in counts)
    }
    return dense, attn_flops


def level_table(
    model: ConditionalUNet, height: int | None = None, width: int | None = None
) -> list[LevelRow]:
    res = model.config["initial_img_resolution"]
    height, width = height or res, width or res
    dense, attn = count_flops(model, height, width)

    def under(name: str, prefixes: list[str]) -> bool:
        """``name`` is one of the modules ``prefixes`` or inside one."""
        return any(name == p or name.startswith(p + ".") for p in prefixes)

    def flops(prefixes: list[str]) -> tuple[float, float]:
        d = sum(v for k, v in dense.items() if under(k, prefixes))
        a = sum(v for k, v in attn.items() if under(k, prefixes))
        return (d + a) / 1e9, a / 1e9

    def params(prefixes: list[str]) -> int:
        return sum(p.numel() for n, p in model.named_parameters() if under(n, prefixes))

    def row(
        name: str,
        prefixes: list[str],
        resolution: int,
        cin: int,
        cout: int,
        blocks: int = 0,
        attention: bool = False,
        resample: str = "-",
    ) -> LevelRow:
        g, a = flops(prefixes)
        return LevelRow(
            name, resolution, cin, cout, blocks, attention, resample, params(prefixes), g, a
        )

    base = model.config["base_channels"]
    rows = [
        row("stem (time MLP, conv_in)", ["time_mlp", "conv_in"], res, model.in_img_channels, base)
    ]
    for plan in model.plan:
        if plan.stage == "bottleneck":
            prefixes, name = ["bottleneck_res1", "bottleneck_attn", "bottleneck_res2"], "bottleneck"
        else:  # plan.index counts the stage's levels from 1, like the ModuleList from 0
            prefixes, name = [f"{plan.stage}.{plan.index - 1}"], f"{plan.stage} {plan.index}"
        rows.append(
            row(
                name,
                prefixes,
                plan.resolution,
                plan.in_channels,
                plan.out_channels,
                plan.res_blocks,
                plan.attention,
                plan.resample,
            )
        )
    rows.append(
        row(
            "head (norm, conv_out)",
            ["conv_out_norm", "conv_out"],
            res,
            base,
            model.out_img_channels,
        )
    )
    return rows


def format_table(model: ConditionalUNet, rows: list[LevelRow]) -> str:
    hdr = f"{'level':<26}{'res':>5}{'ch in':>7}{'ch out':>7}{'res blk':>8}{'attn':>6}{'resample':>9}{'params':>12}{'GFLOP':>9}{'attn GFLOP':>11}"
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        lines.append(
            f"{r.name:<26}{r.resolution:>5}{r.in_channels:>7}{r.out_channels:>7}{r.res_blocks:>8}"
            f"{'yes' if r.attention else 'no':>6}{r.resample:>9}{r.params:>12,}{r.gflop:>9.2f}{r.attn_gflop:>11.2f}"
        )
    total_p = sum(p.numel() for p in model.parameters())
    total_g = sum(r.gflop for r in rows)
    total_a = sum(r.attn_gflop for r in rows)
    lines.append("-" * len(hdr))
    lines.append(
        f"{'total':<26}{'':>5}{'':>7}{'':>7}{'':>8}{'':>6}{'':>9}{total_p:>12,}{total_g:>9.2f}{total_a:>11.2f}"
    )
    return "\n".join(lines)
