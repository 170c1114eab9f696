"""``condiff bench``: speed of the spec's network, plain and optimised, measured side by side.

Every figure is a median of timed repeats after warm-up, timed with CUDA events on a GPU (host
clock on CPU). Rows: the same network run plainly (eager fp32, eager bf16) and optimised
(bf16 + channels_last + torch.compile [+ CUDA graphs for sampling]), and, when diffusers is
installed, its UNet2DModel in the nearest configuration.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from condiff.diffusion import NoiseSchedule, diffusion_loss, sample
from condiff.diffusion.objectives import decode_target
from condiff.infer.graphs import GraphedSampler
from condiff.nn import ConditionalUNet, preset_kwargs


@dataclass
class BenchRow:
    preset: str
    variant: str
    train_img_s: float | None = None
    train_batch: int | None = None
    peak_mem_gib: float | None = None
    fwd_ms_b1: float | None = None
    fwd_graph_ms_b1: float | None = None  # one forward replayed from a CUDA graph
    dpmpp20_ms_b1: float | None = None
    ddim50_ms_b1: float | None = None
    sample_img_s: float | None = None
    sample_batch: int | None = None
    profile: dict[str, float] | None = None  # training-step CUDA time by kernel family, ms
    note: str = ""


def _timer(device: torch.device, fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` over ``repeats`` timed runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def _graphed_forward_time(
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
        return _timer(x.device, graph.replay, repeats)
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


def _variants(device: torch.device, compile_: bool, diffusers: bool) -> list[Variant]:
    from condiff.nn.attention import triton_available

    bf16 = torch.bfloat16
    v = [Variant("eager fp32")]
    if device.type == "cuda":
        v.append(Variant("eager bf16", bf16))
        triton = triton_available()
        if triton:
            v.append(Variant("eager bf16, triton attention", bf16, attention="triton"))
        if compile_:
            opt = Variant("optimised (bf16 CL compile graphs), sdpa", bf16, True, True, True)
            v.append(opt)
            if triton:
                v.append(
                    Variant(
                        "optimised, triton attention",
                        bf16,
                        True,
                        True,
                        True,
                        attention="triton",
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
        kw = {**ConditionalUNet().config, **preset_kwargs(preset), "dropout_rate": 0.0}
        torch.manual_seed(0)
        model: nn.Module = DiffusersAdapter(kw, size) if var.diffusers else ConditionalUNet(**kw)
        model = model.to(device)
        fmt = torch.channels_last if var.cl else torch.contiguous_format
        model = model.to(memory_format=fmt)
        if var.compile:
            # One static graph per shape (train b, 1, sample b): a fresh start per row, and no
            # automatic dynamic-shape recompile (minutes per row on an H200, the --quick budget)
            torch._dynamo.reset()
        net: nn.Module = torch.compile(model, dynamic=False) if var.compile else model
        cin, cout = kw["in_img_channels"], kw["out_img_channels"]
        ac = (
            torch.autocast(device.type, dtype=var.dtype)
            if var.dtype is not None
            else contextlib.nullcontext()
        )
        sched = NoiseSchedule("linear")
        row = BenchRow(preset, var.name, train_batch=batch, sample_batch=sample_batch)

        # training step: loss, backward, AdamW (fused on CUDA)
        opt = torch.optim.AdamW(
            model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {})
        )
        x0 = torch.randn(batch, cout, size, size, device=device).contiguous(memory_format=fmt)
        cond = torch.randn(batch, cin - cout, size, size, device=device).contiguous(
            memory_format=fmt
        )

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            with ac:
                loss = diffusion_loss(net, x0, cond, sched).mean()
            loss.backward()
            opt.step()

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        dt = _timer(device, train_step, repeats, warmup=3)
        row.train_img_s = batch / dt
        if device.type == "cuda":
            row.peak_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
        if profile:
            row.profile = profile_families(train_step, device)
        model.eval()

        x1 = torch.randn(1, cin, size, size, device=device).contiguous(memory_format=fmt)
        t1 = torch.tensor([500], device=device)
        with torch.no_grad(), ac:
            row.fwd_ms_b1 = 1000 * _timer(device, lambda: net(x1, t1), repeats * 3)
        if var.graphs and device.type == "cuda":
            row.fwd_graph_ms_b1 = 1000 * _graphed_forward_time(net, x1, t1, var.dtype, repeats * 3)

        def sampler_time(name: str, steps: int, b: int) -> float:
            c = torch.randn(b, cin - cout, size, size, device=device).contiguous(memory_format=fmt)
            xT = torch.randn(b, cout, size, size, device=device)
            if var.graphs and device.type == "cuda":
                g = GraphedSampler(
                    net,
                    sched,
                    c,
                    xT,
                    sampler=name,
                    steps=steps,
                    objective="eps",
                    spacing="trailing",
                    clip=True,
                    autocast_dtype=var.dtype,
                )
                return _timer(device, lambda: g(c, xT), max(3, repeats // 2), warmup=1)
            with ac:
                return _timer(
                    device,
                    lambda: sample(
                        net, c, sched, target_channels=cout, sampler=name, steps=steps, x_T=xT
                    ),
                    max(3, repeats // 2),
                    warmup=1,
                )

        row.dpmpp20_ms_b1 = 1000 * sampler_time("dpmpp_2m", 20, 1)
        row.ddim50_ms_b1 = 1000 * sampler_time("ddim", 50, 1)
        row.sample_img_s = sample_batch / sampler_time("dpmpp_2m", 20, sample_batch)
        return row


def _photos_at_least(dest: Path, size: int, color: str) -> Path:
    """The bundled photographs as PNG files in ``dest``, enlarged (bicubic) where a side is
    shorter than ``size``, so every preset's native crop fits."""
    from PIL import Image

    from condiff.data import export_bundled

    for path in export_bundled(dest, color):
        with Image.open(path) as im:
            w, h = im.size
            if min(w, h) < size:
                f = size / min(w, h)
                im.resize((max(size, round(w * f)), max(size, round(h * f))), Image.BICUBIC).save(
                    path
                )
    return dest


TRAIN_LOOP = "condiff train loop (data, EMA, logging)"  # the variant name of its row


def bench_train_loop(
    preset: str, device: torch.device, *, size: int, batch: int, window: int
) -> BenchRow:
    """``condiff train``'s own loop (4x super-resolution crops read from PNG files by loader
    workers, EMA, gradient clipping, the one host sync per step, TensorBoard logging) with the
    defaults a run gets on this device (on CUDA: bf16, channels_last, torch.compile, fused AdamW,
    attention "auto"). img/s over the last of three ``window``-step log windows (the first holds
    start-up and compilation). Images and the run live in a temporary folder."""
    import os
    import tempfile

    from condiff.config import DataConfig, ModelConfig, RunConfig, TaskConfig, TrainConfig
    from condiff.train import fit

    row = BenchRow(preset, TRAIN_LOOP, train_batch=batch)
    model = ModelConfig.from_preset(preset, dropout_rate=0.0)
    if model.in_img_channels != 2 * model.out_img_channels or size % 4:
        row.note = "skipped: needs in = 2 x out channels and a size divisible by 4"
        return row
    color = "gray" if model.out_img_channels == 1 else "rgb"
    work_dir = Path(tempfile.mkdtemp(prefix="condiff-bench-"))
    cfg = RunConfig(
        model=model,
        data=DataConfig(
            root=str(_photos_at_least(work_dir / f"photos-{color}-{size}", size, color)),
            task=TaskConfig(name="super_resolution", factor=4),
            color=color,
            crop_size=size,
            val_count=1,
            num_workers=min(6, os.cpu_count() or 1) if device.type == "cuda" else 0,
        ),
        train=TrainConfig(
            output_dir=str(work_dir / f"run-{preset}"),
            steps=3 * window,
            batch_size=batch,
            log_every=window,
            val_every=10**9,
            image_every=10**9,
            ckpt_every=10**9,
            device=str(device),
        ),
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        result = fit(cfg, progress=False)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    rates = [h["img_per_s"] for h in result.history if "img_per_s" in h]
    row.train_img_s = rates[-1]
    if device.type == "cuda":
        row.peak_mem_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def loop_vs_bare(rows: list[BenchRow], device: torch.device) -> list[str]:
    """For each train-loop row: its img/s over the bare step of the row run with the same defaults
    (on CUDA the optimised row with the kernel "auto" picks; on CPU eager fp32)."""
    from condiff.nn.attention import triton_available

    lines = []
    for r in rows:
        if r.variant != TRAIN_LOOP or not r.train_img_s:
            continue
        if device.type == "cuda":
            want = "optimised, triton" if triton_available() else "optimised (bf16"
        else:
            want = "eager fp32"
        bare = next((b for b in rows if b.preset == r.preset and b.variant.startswith(want)), None)
        if bare is not None and bare.train_img_s:
            lines.append(
                f"{r.preset}: condiff train loop {r.train_img_s:.1f} img/s = "
                f"{100 * r.train_img_s / bare.train_img_s:.1f}% of the bare step "
                f"({bare.variant}: {bare.train_img_s:.1f} img/s)"
            )
    return lines


# Kernel-name patterns, first match wins: where a training step's GPU time goes.
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
    fams = list(dict.fromkeys(f for r in rows for f in r.profile))
    head = f"{'training step, GPU ms by kernel family':<40}" + "".join(
        f"{r.variant[:28]:>30}" for r in rows
    )
    lines = [head, "-" * len(head)]
    for f in [*fams, "total"]:
        cells = []
        for r in rows:
            tot = sum(r.profile.values())
            v = tot if f == "total" else r.profile.get(f, 0.0)
            cells.append(f"{v:>10.2f} ms ({100 * v / tot:>4.1f}%)".rjust(30))
        lines.append(f"{f:<40}" + "".join(cells))
    return "\n".join(lines)


def format_rows(rows: list[BenchRow]) -> str:
    hdr = (
        f"{'preset':<13}{'variant':<40}{'train img/s':>12}{'(x)':>7}{'peak GiB':>9}"
        f"{'fwd b1 ms':>10}{'(x)':>7}{'graphed':>8}{'dpm++20 b1 ms':>14}{'(x)':>7}{'ddim50 b1 ms':>13}"
        f"{'sample img/s':>13}{'(x)':>7}"
    )
    lines = [hdr, "-" * len(hdr)]
    base: dict[str, BenchRow] = {}
    for r in rows:
        ref = base.setdefault(
            r.preset, r
        )  # the first row of a preset (eager fp32) is the ratio's base

        def f(v: float | None, d: int = 1) -> str:
            return "-" if v is None else f"{v:.{d}f}"

        def ratio(v: float | None, b: float | None, inverse: bool = False) -> str:
            if v is None or b is None or v == 0:
                return "-"
            return f"{(b / v) if inverse else (v / b):.2f}"

        lines.append(
            f"{r.preset:<13}{r.variant:<40}{f(r.train_img_s):>12}{ratio(r.train_img_s, ref.train_img_s):>7}"
            f"{f(r.peak_mem_gib, 2):>9}{f(r.fwd_ms_b1, 2):>10}{ratio(r.fwd_ms_b1, ref.fwd_ms_b1, True):>7}"
            f"{f(r.fwd_graph_ms_b1, 2):>8}{f(r.dpmpp20_ms_b1):>14}{ratio(r.dpmpp20_ms_b1, ref.dpmpp20_ms_b1, True):>7}"
            f"{f(r.ddim50_ms_b1):>13}{f(r.sample_img_s, 2):>13}{ratio(r.sample_img_s, ref.sample_img_s):>7}"
        )
    lines.append(
        "(x): speed-up against the preset's first row, measured in this run. graphed: the "
        "batch-1 forward replayed from a CUDA graph (optimised row, CUDA only)."
    )
    return "\n".join(lines)


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
    dev = torch.device(
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    presets = presets or (["seed-default", "seed-rgb480"] if dev.type == "cuda" else ["tiny"])
    rows: list[BenchRow] = []
    for preset in presets:
        kw = {**ConditionalUNet().config, **preset_kwargs(preset)}
        s = size or kw["initial_img_resolution"]
        b = batch or (64 if dev.type == "cuda" and s <= 128 else 8 if dev.type == "cuda" else 4)
        sb = sample_batch or (
            64 if dev.type == "cuda" and s <= 128 else 8 if dev.type == "cuda" else 4
        )
        jobs: list[tuple[str, Callable[[], BenchRow]]] = [
            (
                var.name,
                partial(
                    bench_variant,
                    preset,
                    var,
                    dev,
                    size=s,
                    batch=b,
                    sample_batch=sb,
                    repeats=repeats,
                    profile=profile and not var.diffusers and var.dtype is not None,
                ),
            )
            for var in _variants(dev, compile_, diffusers)
            if (not only or any(o in var.name for o in only))
            and (not quick or var.name in QUICK_ROWS.get(dev.type, ()))
        ]
        if train_loop:
            jobs.append(
                (
                    TRAIN_LOOP,
                    partial(bench_train_loop, preset, dev, size=s, batch=b, window=train_loop),
                )
            )
        for name, job in jobs:
            try:
                row = job()
            except Exception as e:  # a variant that fails is reported, not fatal
                row = BenchRow(preset, name, note=f"failed: {type(e).__name__}: {e}"[:200])
            rows.append(row)
            if json_path:  # written after every row, so a cut-short run still leaves its numbers
                Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=2))
            print(format_rows(rows[-1:]).splitlines()[2], flush=True)
            print(
                f"  {preset} / {name}: done" + (f" ({row.note})" if row.note else ""),
                flush=True,
            )
            if dev.type == "cuda":
                torch.cuda.empty_cache()
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
    print(f"bench: {len(rows)} rows in {time.perf_counter() - t_start:.0f} s")
    return rows


ISA_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_info() -> dict[str, object]:
    """The CPU this runs on: model name, cores, and the instruction sets that decide which
    deployment path is fastest (AVX-512 VNNI / BF16 and AMX for int8 and bf16)."""
    import os
    import platform

    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), "x86_64"):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {
        "model": model,
        "cores": os.cpu_count(),
        "isa": [f for f in ISA_FLAGS if f in flags],
    }


# How to take each --cpu-deploy path from the command line (RUN = the checkpoint).
DEPLOY_COMMANDS = {
    "eager fp32": "condiff sample --checkpoint RUN --device cpu ...",
    "compiled fp32": "condiff sample --checkpoint RUN --device cpu --compile ...",
    "compiled bf16 (autocast)": "condiff sample --checkpoint RUN --device cpu --compile "
    "--dtype bf16 ...",
    "onnxruntime fp32": "condiff export --checkpoint RUN --output model.onnx && "
    "condiff sample --engine onnxruntime --model model.onnx ...",
    "onnxruntime int8 (QDQ)": "condiff quantize --checkpoint RUN --output model-int8.onnx && "
    "condiff sample --engine onnxruntime --model model-int8.onnx ...",
    "onnxruntime fp32, numpy engine": "condiff export --checkpoint RUN --output model.onnx && "
    "condiff sample --engine onnxruntime --model model.onnx ...",
}
MIN_DB_VS_FP32 = 40.0  # a float path must reproduce eager fp32's samples to this PSNR


def fastest_paths(
    rows: list[dict], batches: tuple[int, ...], int8_ok: bool
) -> dict[int, tuple[str, float]]:
    """Per batch: the path with the shortest sample time among those that keep accuracy
    (float paths: samples within MIN_DB_VS_FP32 of eager fp32's; int8: its gate passed), and
    its speed-up against eager fp32."""
    best: dict[int, tuple[str, float]] = {}
    for b in batches:
        ok = [
            r
            for r in rows
            if (int8_ok if "int8" in r["path"] else r[f"psnr_vs_fp32_b{b}"] >= MIN_DB_VS_FP32)
        ]
        r = min(ok, key=lambda r: r[f"sample_b{b}_s"])
        best[b] = (r["path"], rows[0][f"sample_b{b}_s"] / r[f"sample_b{b}_s"])
    return best


def run_cpu_deploy(
    checkpoint: str,
    *,
    out_dir: str = "bench-deploy",
    steps: int = 20,
    batches: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    size: int | None = None,
    json_path: str | None = "bench_deploy.json",
    quantize: dict | None = None,
) -> list[dict]:
    """CPU deployment paths side by side: latency of one network call and of a ``steps``-step
    dpmpp_2m sample at each batch, with the samples' PSNR against eager fp32 (same seeds).

    One path's engine is alive at a time (an ONNX Runtime session of seed-default holds ~15 GB
    after a call). ``quantize``: keyword arguments for :func:`quantize_run` (calibration, gate).
    """
    import gc

    from condiff.data.io import from_model
    from condiff.evaluate.metrics import psnr
    from condiff.export.onnx import OrtNetwork, export_onnx
    from condiff.export.quantize import MAX_LOSS_DB, quantize_run
    from condiff.export.runtime import OrtPipeline
    from condiff.infer.pipeline import load

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = load(checkpoint, device="cpu", compile=False, graphs=False)
    model = base.model
    s = size or base.cfg.data.crop_size
    fp32_onnx, _ = export_onnx(checkpoint, out / "fp32.onnx")
    int8_onnx, gate_report = quantize_run(
        checkpoint, out / "int8.onnx", force=True, **(quantize or {})
    )
    sched, cin, cout = (
        base.schedule,
        base.cfg.model.in_img_channels,
        base.cfg.model.out_img_channels,
    )
    residual, scale = base.cfg.diffusion.residual, base.cfg.diffusion.target_scale

    def compiled_bf16() -> Callable[[Tensor, Tensor], Tensor]:
        compiled = torch.compile(model)

        def net(x: Tensor, t: Tensor) -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled(x, t).float()

        return net

    # name -> factory of the network callable; "numpy" builds the torch-free engine instead
    factories: dict[str, Callable[[], Callable]] = {
        "eager fp32": lambda: model,
        "compiled fp32": lambda: torch.compile(model),
        "compiled bf16 (autocast)": compiled_bf16,
        "onnxruntime fp32": lambda: OrtNetwork(fp32_onnx),
        "onnxruntime int8 (QDQ)": lambda: OrtNetwork(int8_onnx),
        "onnxruntime fp32, numpy engine": lambda: OrtPipeline(fp32_onnx),
    }
    rows: list[dict] = []
    ref: dict[int, Tensor] = {}
    dev = torch.device("cpu")
    for name, make in factories.items():
        engine = make()
        numpy = isinstance(engine, OrtPipeline)
        net = engine.network if numpy else engine
        row: dict = {"path": name}
        for b in batches:
            g = torch.Generator().manual_seed(b)
            x = torch.randn(b, cin, s, s, generator=g)
            t = torch.full((b,), 500)
            cond = torch.rand(b, cin - cout, s, s, generator=g) * 2 - 1
            xT = torch.randn(b, cout, s, s, generator=g)
            if numpy:
                x, t = x.numpy(), t.numpy()

            def run(net=net, cond=cond, xT=xT, engine=engine, numpy=numpy) -> Tensor:
                if numpy:  # a finished sample: residual added, clipped
                    y = engine(cond.numpy(), sampler="dpmpp_2m", steps=steps, noise=xT.numpy())
                    return torch.from_numpy(y)
                return sample(
                    net,
                    cond,
                    sched,
                    target_channels=cout,
                    steps=steps,
                    x_T=xT,
                    objective=base.cfg.diffusion.objective,
                    clip_value=scale,
                )

            with torch.no_grad():
                row[f"call_b{b}_ms"] = 1000 * _timer(
                    dev, lambda net=net, x=x, t=t: net(x, t), repeats
                )
                y = run()  # also the warm-up of the timed samples
                row[f"sample_b{b}_s"] = _timer(dev, run, max(1, repeats - 1), warmup=0)
            ref.setdefault(b, y)
            ref_b = ref[b]
            if numpy:  # compare finished samples
                ref_b = decode_target(ref_b, cond, residual=residual, scale=scale).clamp(-1, 1)
            row[f"psnr_vs_fp32_b{b}"] = float(
                np.mean([psnr(from_model(y[i]), from_model(ref_b[i])) for i in range(b)])
            )
        rows.append(row)
        del engine, net, run  # run() holds the engine too: free it before the next one
        gc.collect()
        print(f"  {name}: done", flush=True)
    hdr = f"{'path':<28}" + "".join(
        f"{'call b' + str(b) + ' ms':>13}{'(x)':>6}{str(steps) + '-step b' + str(b) + ' s':>15}{'(x)':>6}{'dB vs fp32':>11}"
        for b in batches
    )
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        line = f"{r['path']:<28}"
        for b in batches:
            c, smp = r[f"call_b{b}_ms"], r[f"sample_b{b}_s"]
            p = r[f"psnr_vs_fp32_b{b}"]
            line += (
                f"{c:>13.1f}{rows[0][f'call_b{b}_ms'] / c:>6.2f}{smp:>15.2f}"
                f"{rows[0][f'sample_b{b}_s'] / smp:>6.2f}{('inf' if p == float('inf') else f'{p:.1f}'):>11}"
            )
        lines.append(line)
    cpu = cpu_info()
    print(f"\ncondiff bench --cpu-deploy: {checkpoint}, {s}x{s}, torch {torch.__version__}")
    print(
        f"CPU: {cpu['model']}, {cpu['cores']} logical cores; instruction sets: "
        + (" ".join(cpu["isa"]) or "none of " + " ".join(ISA_FLAGS))  # type: ignore[arg-type]
    )
    print("\n".join(lines))
    print(
        "(x): speed-up against eager fp32 in this run. dB vs fp32: PSNR of the samples against "
        "eager fp32's, same noise."
    )
    max_loss = (quantize or {}).get("max_loss_db", MAX_LOSS_DB)
    int8_ok = gate_report.loss_db <= max_loss
    print(
        f"int8 accuracy gate (held-out images, vs targets): {gate_report}: "
        + ("passed" if int8_ok else f"failed (allowed {max_loss} dB)")
    )
    best = fastest_paths(rows, batches, int8_ok)
    for b, (path, x) in best.items():
        print(
            f"fastest accurate path on this CPU at batch {b}: {path} ({x:.2f}x eager fp32):\n"
            f"  {DEPLOY_COMMANDS[path].replace('RUN', str(checkpoint))}"
        )
    print("The best path depends on the CPU (its cores and instruction sets): measure on yours.")
    if json_path:
        Path(json_path).write_text(
            json.dumps(
                {
                    "cpu": cpu,
                    "rows": rows,
                    "gate": str(gate_report),
                    "fastest": {str(b): v[0] for b, v in best.items()},
                },
                indent=2,
            )
        )
    return rows
