"""``condiff bench --recipe CONFIG``: a recipe's own training step, at its crop and per-device
batch, eager against compiled variants (``compiled``: what ``configs/sr4-gray.yaml`` ships on
CUDA; ``graphed``: compiled with CUDA graphs; ``regional``: each block compiled on its own), side
by side in one run: first-step time (compilation included: cold, or from Inductor's cache when a
run has compiled the same network before), steady img/s, the time to the recipe's step count,
and the share of the device's peak rate."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from condiff.bench.timing import Col, bench_device, sync, table, timer
from condiff.config import load_config
from condiff.diffusion import NoiseSchedule, diffusion_loss
from condiff.diffusion.objectives import encode_target
from condiff.nn import ConditionalUNet
from condiff.nn.blocks import AttentionBlock, ResidualBlock
from condiff.nn.compiled import compile_module
from condiff.nn.precision import autocast_ctx, resolve_precision
from condiff.train.ema import EMA
from condiff.train.step import sample_timesteps

# Dense bf16 peak of an H200 (NVIDIA's datasheet, SXM); a measured 8192^3 bf16 matmul there
# reaches ~790 TFLOP/s (the device tool's KINDS.md). On a CPU no peak is assumed.
PEAK_TFLOPS = {"cuda": 989.0}
MODES = ("eager", "compiled", "regional", "graphed")


@dataclass
class RecipeRow:
    mode: str
    batch: int
    first_step_s: float
    step_ms: float
    img_s: float
    to_end_min: float  # first step + (steps - 1) x step time, for the recipe's steps
    peak_share: float | None  # training FLOP rate / the device's peak


def forward_gflop(model: ConditionalUNet, size: int) -> float:
    """Forward GFLOP per image at ``size`` (attention's matrix products included)."""
    from condiff.nn.summary import count_flops

    dense, attn = count_flops(model, size, size)
    return (sum(dense.values()) + sum(attn.values())) / 1e9


def _build(cfg, mode: str, device: torch.device) -> tuple[ConditionalUNet, torch.nn.Module]:
    torch.manual_seed(0)
    model = ConditionalUNet(**cfg.model.network_kwargs()).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    torch._dynamo.reset()
    if mode == "compiled":
        return model, compile_module(model, dynamic=False)
    if mode == "graphed":  # compiled, forward and backward replayed as CUDA graphs
        return model, compile_module(model, dynamic=False, mode="reduce-overhead")
    if mode == "regional":  # compile each repeated block: one graph per block shape
        # one code object (ResidualBlock.forward) serves every block shape: allow a
        # specialisation per shape instead of dynamo's default limit of 8
        torch._dynamo.config.recompile_limit = 64
        torch._dynamo.config.automatic_dynamic_shapes = False
        for m in model.modules():
            if isinstance(m, ResidualBlock | AttentionBlock):
                m.compile(dynamic=False)
    return model, model


def recipe_step(
    cfg, mode: str, device: torch.device, batch: int
) -> tuple[ConditionalUNet, Callable[[], None]]:
    """The network and the recipe's training step (target encoding, timesteps with the top-t
    share, the loss, backward, clipping, (fused) AdamW and the EMA update) on random crops."""
    model, net = _build(cfg, mode, device)
    d, tc, s = cfg.diffusion, cfg.train, cfg.data.crop_size
    precision = resolve_precision(tc.precision, device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, fused=device.type == "cuda")
    ema, sched = EMA(model, tc.ema_decay), NoiseSchedule.from_config(d)
    cin, cout = cfg.model.in_img_channels, cfg.model.out_img_channels
    cond = torch.rand(batch, cin - cout, s, s, device=device) * 2 - 1
    x0 = encode_target(
        torch.rand(batch, cout, s, s, device=device) * 2 - 1,
        cond,
        residual=d.residual,
        scale=d.target_scale,
    )
    gen = torch.Generator(device).manual_seed(0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        t = sample_timesteps(batch, sched.num_timesteps, d.top_t_fraction, device, gen)
        with autocast_ctx(precision, device):
            loss = diffusion_loss(net, x0, cond, sched, objective=d.objective, t=t).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or float("inf"))
        opt.step()
        ema.update(model, 0)

    return model, step


def time_step(
    cfg,
    mode: str,
    model: ConditionalUNet,
    step: Callable[[], None],
    device: torch.device,
    batch: int,
    repeats: int,
) -> RecipeRow:
    """First-step time (compilation included), then the median step, as a table row."""
    tc, s = cfg.train, cfg.data.crop_size
    t0 = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - t0
    dt = timer(device, step, repeats, warmup=2)
    flop = 3 * forward_gflop(model, s) * 1e9 * batch / dt  # forward + backward ~ 3 forwards
    peak = PEAK_TFLOPS.get(device.type)
    return RecipeRow(
        mode,
        batch,
        first,
        1000 * dt,
        batch / dt,
        (first + (tc.steps - 1) * dt) / 60,
        flop / (peak * 1e12) if peak else None,
    )


def bench_mode(cfg, mode: str, device: torch.device, batch: int, repeats: int) -> RecipeRow:
    """One row: the recipe's step built in ``mode`` and timed."""
    model, step = recipe_step(cfg, mode, device, batch)
    return time_step(cfg, mode, model, step, device, batch, repeats)


def run_recipe_bench(
    config: str,
    *,
    device: str = "auto",
    batch: int | None = None,
    repeats: int = 10,
    modes: tuple[str, ...] = MODES,
    json_path: str | None = None,
) -> list[RecipeRow]:
    cfg = load_config(config)
    dev = bench_device(device)
    gpus = max(1, torch.cuda.device_count()) if dev.type == "cuda" else 1
    b = batch or (cfg.train.batch_size // gpus if dev.type == "cuda" else 4)
    rows = []
    for mode in modes:
        try:
            rows.append(bench_mode(cfg, mode, dev, b, repeats))
        except Exception as e:  # a mode that fails is reported, not fatal
            print(f"  {mode}: failed: {type(e).__name__}: {e}"[:300], flush=True)
        else:
            print(f"  {mode}: {rows[-1].img_s:.1f} img/s", flush=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(
        f"\ncondiff bench --recipe {config} on {name}, torch {torch.__version__}: "
        f"{cfg.model.preset or 'model'}, crop {cfg.data.crop_size}, batch {b} per device, "
        f"{cfg.train.steps} steps"
    )
    base = rows[0].img_s if rows else None
    print(
        table(
            [
                Col("mode", 10, left=True),
                Col("batch", 6),
                Col("first step s", 13),
                Col("step ms", 9),
                Col("img/s", 9),
                Col("(x)", 6, ".2f"),
                Col("to end min", 11, ".2f"),
                Col("peak share", 11, ".1%"),
            ],
            [
                [
                    r.mode,
                    r.batch,
                    r.first_step_s,
                    r.step_ms,
                    r.img_s,
                    r.img_s / base if base else None,
                    r.to_end_min,
                    r.peak_share,
                ]
                for r in rows
            ],
        )
    )
    print(
        "(x): against the first row. to end: first step + the rest at the steady rate, for "
        "the recipe's steps on one device (data loading not included). peak share: 3 x "
        "forward FLOPs per image x img/s over the dense bf16 peak (989 TFLOP/s: an H100 or "
        "H200 SXM)."
    )
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows
