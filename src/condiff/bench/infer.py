"""``condiff bench --infer --sizes 256 512 1024``: latency of whole images through ``Pipeline``
(tiled at the training window, as users run photographs): the one-call posterior mean and a
20-step dpmpp_2m sample per output size (dpmpp_2m whatever sampler a checkpoint's config names),
with Mpix/s, the network work (tiles x forward FLOPs) and its share of the device's peak, side by
side in one run. ``--tiles 64:16 128:32`` adds tile plans (window:overlap) beside the training
window's, each timed on the same images (issue 33: fewer, larger tiles for the 1024² mean)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from condiff.bench.recipe import PEAK_TFLOPS, forward_gflop
from condiff.bench.timing import Col, bench_device, table, timer
from condiff.infer.tiling import tile_starts


@dataclass
class InferRow:
    size: int
    window: int  # tile side
    overlap: int  # pixels shared by neighbouring tiles
    tiles: int  # network windows per call
    mean_ms: float
    sample_ms: float
    mean_mpix_s: float
    sample_mpix_s: float
    tflop_per_call: float
    peak_share_mean: float | None
    peak_share_sample: float | None


def _pipeline(checkpoint: str | None, preset: str, window: int, device: torch.device, **speed):
    """A checkpoint's pipeline, or the preset with random weights (speed needs no training)."""
    from condiff.config import DiffusionConfig, ModelConfig, RunConfig, SampleConfig
    from condiff.infer.pipeline import Pipeline, load
    from condiff.nn import ConditionalUNet

    dtype = "bf16" if device.type == "cuda" else "fp32"
    if checkpoint:
        return load(checkpoint, device=device, dtype=dtype, **speed)
    cfg = RunConfig(
        model=ModelConfig.from_preset(preset, dropout_rate=0.0),
        diffusion=DiffusionConfig(
            rescale_zero_terminal_snr=True, objective="v", residual=True, target_scale=4.0
        ),
        sample=SampleConfig(steps=20),
    )
    cfg.data.crop_size = window
    torch.manual_seed(0)
    model = ConditionalUNet(**cfg.model.network_kwargs())
    return Pipeline(model, cfg, device=device, dtype=dtype, **speed)


def bench_size(
    pipe, size: int, repeats: int, gflop: float, device: torch.device, overlap: int
) -> InferRow:
    """One output size at the pipeline's window and ``overlap``."""
    cond = torch.rand(1, pipe.cond_channels, size, size) * 2 - 1
    m = pipe.size_multiple
    padded = -(-size // m) * m
    tiles = len(tile_starts(padded, pipe.window, overlap)) ** 2
    gen = torch.Generator(device)

    def run(est: str) -> float:
        return timer(
            device,
            lambda: pipe(
                cond, estimate=est, sampler="dpmpp_2m", steps=20, generator=gen, overlap=overlap
            ),
            repeats,
            warmup=2,
        )

    mean_s, sample_s = run("mean"), run("sample")
    flop = tiles * gflop * 1e9
    peak = PEAK_TFLOPS.get(device.type)
    share = (lambda sec, calls: flop * calls / sec / (peak * 1e12)) if peak else None
    mpix = size * size / 1e6
    return InferRow(
        size,
        pipe.window,
        overlap,
        tiles,
        1000 * mean_s,
        1000 * sample_s,
        mpix / mean_s,
        mpix / sample_s,
        flop / 1e12,
        share(mean_s, 1) if share else None,
        share(sample_s, 20) if share else None,
    )


def run_infer_bench(
    sizes: list[int],
    *,
    checkpoint: str | None = None,
    preset: str = "seed-default",
    window: int = 64,
    device: str = "auto",
    repeats: int = 5,
    compile: bool | None = None,
    graphs: bool | None = None,
    json_path: str | None = None,
    tiles: list[tuple[int, int]] | None = None,
) -> list[InferRow]:
    """``tiles``: (window, overlap) plans timed beside the training window's (window / 4)."""
    dev = bench_device(device)
    pipe = _pipeline(checkpoint, preset, window, dev, compile=compile, graphs=graphs)
    plans = [(pipe.window, pipe.window // 4)]
    plans += [p for p in tiles or [] if p not in plans]
    for win, ov in plans:
        if not 0 <= ov < win or win % pipe.size_multiple:
            raise ValueError(
                f"--tiles {win}:{ov}: the window must divide by {pipe.size_multiple} and the "
                "overlap lie in [0, window)"
            )
    net = getattr(pipe.model, "_orig_mod", pipe.model)
    rows = []
    for k, (win, ov) in enumerate(plans):
        if k:  # each plan compiles afresh, as a new process would: a graph compiled for one
            # window recompiles for the next with dynamic shapes (slower kernels), which would
            # charge one plan's timing with another's compile (issue 33, session 12)
            torch._dynamo.reset()
            pipe = _pipeline(checkpoint, preset, window, dev, compile=compile, graphs=graphs)
        pipe.window = win
        gflop = forward_gflop(net, win)
        for s in sizes:
            with torch.inference_mode():
                rows.append(bench_size(pipe, s, repeats, gflop, dev, ov))
            print(
                f"  {s}px, tiles {win}/{ov}: mean {rows[-1].mean_ms:.1f} ms, "
                f"sample {rows[-1].sample_ms:.0f} ms",
                flush=True,
            )
    pipe.window = plans[0][0]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    what = checkpoint or f"{preset} (random weights)"
    print(
        f"\ncondiff bench --infer on {name}, torch {torch.__version__}: {what}, training "
        f"window {pipe.window}, {pipe.dtype}, batch 1"
    )
    print(
        table(
            [
                Col("size", 6),
                Col("tile/overlap", 13),
                Col("tiles", 6),
                Col("mean ms", 9),
                Col("Mpix/s", 8),
                Col("TFLOP/call", 11, ".2f"),
                Col("peak", 7, ".1%"),
                Col("sample20 ms", 12),
                Col("Mpix/s", 8, ".2f"),
                Col("peak", 7, ".1%"),
            ],
            [
                [
                    r.size,
                    f"{r.window}/{r.overlap}",
                    r.tiles,
                    r.mean_ms,
                    r.mean_mpix_s,
                    r.tflop_per_call,
                    r.peak_share_mean,
                    r.sample_ms,
                    r.sample_mpix_s,
                    r.peak_share_sample,
                ]
                for r in rows
            ],
        )
    )
    print(
        "tiles: network windows per call; TFLOP/call: tiles x the "
        "forward FLOPs of one window; peak: that work per second over the dense bf16 peak."
    )
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return rows
