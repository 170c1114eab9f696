"""``condiff bench``: speed of the spec's network, plain and optimised, measured side by side.

Every figure is a median of timed repeats after warm-up, timed with CUDA events on a GPU (host
clock on CPU). Rows: the same network run plainly (eager fp32, eager bf16) and optimised
(bf16 + channels_last + torch.compile [+ CUDA graphs for sampling]), and, when diffusers is
installed, its UNet2DModel in the nearest configuration.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from condiff.bench.profile import format_profiles, profile_families
from condiff.bench.rows import BenchRow, format_rows
from condiff.bench.timing import bench_device, timer
from condiff.bench.train_loop import TRAIN_LOOP, bench_train_loop, loop_vs_bare
from condiff.diffusion import NoiseSchedule, diffusion_loss, sample
from condiff.infer.graphs import GraphedSampler
from condiff.nn import ConditionalUNet, preset_kwargs
from condiff.nn.compiled import compile_module


class DiffusersAdapter(nn.Module):
    """diffusers' UNet2DModel called like ConditionalUNet: ``(x_concat, t) -> prediction``."""

    def __init__(self, kw: dict, size: int) -> None:
        super().__init__()
        from diffusers import UNet2DModel

        mults = kw["channel_mults"]
        base = kw["base_channels"]
        res = [size // 2**i for i in range(len(mults))]
        attn = [r in kw["attention_resolutions"] for r in res]
        self.net = UNet2DModel(
            sample_size=size,
            in_channels=kw["in_img_channels"],
            out_channels=kw["out_img_channels"],
            block_out_channels=tuple(base * m for m in mults),
            layers_per_block=kw["num_res_blocks_per_level"],
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
            attention_head_dim=base // kw["num_heads_attn"],
            norm_num_groups=kw["num_groups_norm"],
            dropout=0.0,
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x, t).sample


def graphed_forward_time(
    net: nn.Module, x: Tensor, t: Tensor, dtype: torch.dtype | None, repeats: int
) -> float | None:
    """Median seconds of one forward captured in a CUDA graph (None if capture fails)."""
    try:
        ctx = torch.autocast("cuda", dtype=dtype, enabled=dtype is not None)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad(), ctx:
            for _ in range(2):
                net(x, t)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), torch.no_grad(), ctx:
            net(x, t)
        return timer(x.device, graph.replay, repeats)
    except RuntimeError:
        return None


@dataclass(frozen=True)
class Variant:
    """One way of running the network: precision, memory format, compile, graphs, or diffusers."""

    name: str
    dtype: torch.dtype | None = None  # autocast dtype; None = fp32
    cl: bool = False  # channels_last
    compile: bool = False
    graphs: bool = False  # CUDA-graph capture of sampling loops and the batch-1 forward
    diffusers: bool = False  # diffusers' UNet2DModel instead of ConditionalUNet
    attention: str = "sdpa"  # attention kernel (condiff.nn.attention)


# --quick: the default path and its plain baseline, per device type
QUICK_ROWS = {
    "cuda": ("eager bf16", "optimised, triton attention"),
    "cpu": ("eager fp32", "compiled fp32"),
}


def variants(device: torch.device, compile_: bool, diffusers: bool) -> list[Variant]:
    from condiff.nn.attention import triton_available

    bf16 = torch.bfloat16
    v = [Variant("eager fp32")]
    if device.type == "cuda":
        v.append(Variant("eager bf16", bf16))
        triton = triton_available()
        if triton:
            v.append(Variant("eager bf16, triton attention", bf16, attention="triton"))
        if compile_:
            v.append(Variant("optimised (bf16 CL compile graphs), sdpa", bf16, True, True, True))
            if triton:
                v.append(
                    Variant(
                        "optimised, triton attention", bf16, True, True, True, attention="triton"
                    )
                )
    elif compile_:
        v.append(Variant("compiled fp32", compile=True))
    if diffusers:
        try:
            import diffusers as _  # noqa: F401

            dt = bf16 if device.type == "cuda" else None
            v.append(Variant("diffusers UNet2DModel (eager)", dt, diffusers=True))
        except ImportError:
            pass
    return v


@dataclass
class Setup:
    """A variant's network, ready to time."""

    model: nn.Module
    net: nn.Module  # the model, compiled where the variant says
    cin: int
    cout: int
    fmt: torch.memory_format
    ac: contextlib.AbstractContextManager
    sched: NoiseSchedule


def build(preset: str, var: Variant, device: torch.device, size: int) -> Setup:
    kw = {**ConditionalUNet().config, **preset_kwargs(preset), "dropout_rate": 0.0}
    torch.manual_seed(0)
    model: nn.Module = DiffusersAdapter(kw, size) if var.diffusers else ConditionalUNet(**kw)
    fmt = torch.channels_last if var.cl else torch.contiguous_format
    model = model.to(device).to(memory_format=fmt)
    if var.compile:
        # One static graph per shape (train b, 1, sample b): a fresh start per row, and no
        # automatic dynamic-shape recompile (minutes per row on an H200, the --quick budget)
        torch._dynamo.reset()
    net: nn.Module = compile_module(model, dynamic=False) if var.compile else model
    ac = (
        torch.autocast(device.type, dtype=var.dtype)
        if var.dtype is not None
        else contextlib.nullcontext()
    )
    cin, cout = kw["in_img_channels"], kw["out_img_channels"]
    return Setup(model, net, cin, cout, fmt, ac, NoiseSchedule("linear"))


def time_training(s: Setup, device: torch.device, batch: int, size: int, repeats: int):
    """(seconds per training step: loss, backward, AdamW (fused on CUDA); the step itself)."""
    opt = torch.optim.AdamW(
        s.model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {})
    )
    x0 = torch.randn(batch, s.cout, size, size, device=device).contiguous(memory_format=s.fmt)
    cond = torch.randn(batch, s.cin - s.cout, size, size, device=device)
    cond = cond.contiguous(memory_format=s.fmt)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with s.ac:
            loss = diffusion_loss(s.net, x0, cond, s.sched).mean()
        loss.backward()
        opt.step()

    return timer(device, train_step, repeats, warmup=3), train_step


def sampler_time(
    s: Setup,
    var: Variant,
    device: torch.device,
    name: str,
    steps: int,
    b: int,
    size: int,
    repeats: int,
) -> float:
    """Median seconds of one ``steps``-step sample of batch ``b`` (graph-replayed if asked)."""
    c = torch.randn(b, s.cin - s.cout, size, size, device=device).contiguous(memory_format=s.fmt)
    xT = torch.randn(b, s.cout, size, size, device=device)
    reps = max(3, repeats // 2)
    if var.graphs and device.type == "cuda":
        g = GraphedSampler(
            s.net,
            s.sched,
            c,
            xT,
            sampler=name,
            steps=steps,
            objective="eps",
            spacing="trailing",
            clip=True,
            autocast_dtype=var.dtype,
        )
        return timer(device, lambda: g(c, xT), reps, warmup=1)
    with s.ac:
        return timer(
            device,
            lambda: sample(
                s.net, c, s.sched, target_channels=s.cout, sampler=name, steps=steps, x_T=xT
            ),
            reps,
            warmup=1,
        )


def bench_variant(
    preset: str,
    var: Variant,
    device: torch.device,
    *,
    size: int,
    batch: int,
    sample_batch: int,
    repeats: int,
    profile: bool = False,
) -> BenchRow:
    """One row of the table, run with ``var.attention`` as the attention kernel."""
    from condiff.nn.attention import attention_kernel

    with attention_kernel(var.attention):
        s = build(preset, var, device, size)
        row = BenchRow(preset, var.name, train_batch=batch, sample_batch=sample_batch)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        dt, train_step = time_training(s, device, batch, size, repeats)
        row.train_img_s = batch / dt
        if device.type == "cuda":
            row.peak_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
        if profile:
            row.profile = profile_families(train_step, device)
        s.model.eval()
        x1 = torch.randn(1, s.cin, size, size, device=device).contiguous(memory_format=s.fmt)
        t1 = torch.tensor([500], device=device)
        with torch.no_grad(), s.ac:
            row.fwd_ms_b1 = 1000 * timer(device, lambda: s.net(x1, t1), repeats * 3)
        if var.graphs and device.type == "cuda":
            g = graphed_forward_time(s.net, x1, t1, var.dtype, repeats * 3)
            row.fwd_graph_ms_b1 = None if g is None else 1000 * g
        st = partial(sampler_time, s, var, device, size=size, repeats=repeats)
        row.dpmpp20_ms_b1 = 1000 * st("dpmpp_2m", 20, 1)
        row.ddim50_ms_b1 = 1000 * st("ddim", 50, 1)
        row.sample_img_s = sample_batch / st("dpmpp_2m", 20, sample_batch)
        return row


def jobs_for(
    preset: str, dev: torch.device, opts: dict
) -> list[tuple[str, Callable[[], BenchRow]]]:
    """The rows to run for one preset, as (name, job)."""
    kw = {**ConditionalUNet().config, **preset_kwargs(preset)}
    s = opts["size"] or kw["initial_img_resolution"]
    big = dev.type == "cuda" and s <= 128
    b = opts["batch"] or (64 if big else 8 if dev.type == "cuda" else 4)
    sb = opts["sample_batch"] or (64 if big else 8 if dev.type == "cuda" else 4)
    jobs: list[tuple[str, Callable[[], BenchRow]]] = [
        (
            v.name,
            partial(
                bench_variant,
                preset,
                v,
                dev,
                size=s,
                batch=b,
                sample_batch=sb,
                repeats=opts["repeats"],
                profile=opts["profile"] and not v.diffusers and v.dtype is not None,
            ),
        )
        for v in variants(dev, opts["compile_"], opts["diffusers"])
        if (not opts["only"] or any(o in v.name for o in opts["only"]))
        and (not opts["quick"] or v.name in QUICK_ROWS.get(dev.type, ()))
    ]
    if opts["train_loop"]:
        loop = partial(bench_train_loop, preset, dev, size=s, batch=b, window=opts["train_loop"])
        jobs.append((TRAIN_LOOP, loop))
    return jobs


def run_bench(
    *,
    presets: list[str] | None = None,
    device: str = "auto",
    batch: int | None = None,
    sample_batch: int | None = None,
    repeats: int = 10,
    size: int | None = None,
    json_path: str | None = "bench.json",
    diffusers: bool = True,
    compile_: bool = True,
    profile: bool = False,
    only: list[str] | None = None,
    train_loop: int = 0,
    quick: bool = False,
) -> list[BenchRow]:
    """The table. ``train_loop``: also time ``condiff train``'s own loop with log windows of this
    many steps (0: not). ``quick``: the default path against its plain baseline only (on CUDA
    eager bf16 vs optimised with the Triton kernel; on CPU eager vs compiled fp32), 2 repeats,
    no diffusers row: both GPU presets in one sitting."""
    t_start = time.perf_counter()
    if quick:
        repeats, diffusers = min(repeats, 2), False
    dev = bench_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    opts = dict(
        size=size,
        batch=batch,
        sample_batch=sample_batch,
        repeats=repeats,
        profile=profile,
        compile_=compile_,
        diffusers=diffusers,
        only=only,
        quick=quick,
        train_loop=train_loop,
    )
    rows: list[BenchRow] = []
    presets = presets or (["seed-default", "seed-rgb480"] if dev.type == "cuda" else ["tiny"])
    for preset in presets:
        for name, job in jobs_for(preset, dev, opts):
            rows.append(_run_job(preset, name, job, rows, json_path, dev))
    _print_summary(rows, dev, json_path, t_start)
    return rows


def _run_job(
    preset: str, name: str, job, rows: list[BenchRow], json_path: str | None, dev: torch.device
) -> BenchRow:
    try:
        row = job()
    except Exception as e:  # a variant that fails is reported, not fatal
        row = BenchRow(preset, name, note=f"failed: {type(e).__name__}: {e}"[:200])
    if json_path:  # written after every row, so a cut-short run still leaves its numbers
        Path(json_path).write_text(json.dumps([asdict(r) for r in [*rows, row]], indent=2))
    print(format_rows([row]).splitlines()[2], flush=True)
    print(f"  {preset} / {name}: done" + (f" ({row.note})" if row.note else ""), flush=True)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def _print_summary(
    rows: list[BenchRow], dev: torch.device, json_path: str | None, t0: float
) -> None:
    info = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": [asdict(r) for r in rows],
    }
    if json_path:
        Path(json_path).write_text(json.dumps(info, indent=2))
    print(f"\ncondiff bench on {info['device']}, torch {info['torch']}")
    print(format_rows(rows))
    for r in rows:
        if r.note:
            print(f"note: {r.preset} / {r.variant}: {r.note}")
    for line in loop_vs_bare(rows, dev):
        print(line)
    if any(r.profile for r in rows):
        print(f"\n{format_profiles(rows)}")
    print(f"bench: {len(rows)} rows in {time.perf_counter() - t0:.0f} s")
