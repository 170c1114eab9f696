"""``condiff bench --cpu-deploy``: every CPU deployment path side by side, and advice.

Latency of one network call and of a ``steps``-step dpmpp_2m sample at each batch, with the
samples' PSNR against eager fp32's (same noise), then the fastest path that keeps accuracy, as
the command to run. One path's engine is alive at a time (an ONNX Runtime session of
seed-default holds ~15 GB after a call).
"""

from __future__ import annotations

import gc
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from condiff.bench.timing import Col, table, timer
from condiff.nn.compiled import compile_module

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

# How to take each path from the command line (RUN = the checkpoint).
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


def cpu_info() -> dict[str, object]:
    """The CPU this runs on: model name, cores, and the instruction sets that decide which
    deployment path is fastest (AVX-512 VNNI / BF16 and AMX for int8 and bf16)."""
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
    return {"model": model, "cores": os.cpu_count(), "isa": [f for f in ISA_FLAGS if f in flags]}


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


def engines(base, fp32_onnx: Path, int8_onnx: Path) -> dict[str, Callable[[], Callable]]:
    """name -> factory of the network callable; the numpy engine is a whole OrtPipeline."""
    from condiff.export.onnx import OrtNetwork
    from condiff.export.runtime import OrtPipeline

    model = base.model

    def compiled_bf16() -> Callable[[Tensor, Tensor], Tensor]:
        compiled = compile_module(model)

        def net(x: Tensor, t: Tensor) -> Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled(x, t).float()

        return net

    return {
        "eager fp32": lambda: model,
        "compiled fp32": lambda: compile_module(model),
        "compiled bf16 (autocast)": compiled_bf16,
        "onnxruntime fp32": lambda: OrtNetwork(fp32_onnx),
        "onnxruntime int8 (QDQ)": lambda: OrtNetwork(int8_onnx),
        "onnxruntime fp32, numpy engine": lambda: OrtPipeline(fp32_onnx),
    }


def time_path(
    name: str, engine, base, batches, size: int, steps: int, repeats: int, ref: dict[int, Tensor]
) -> dict:
    """One path's row: call and sample times per batch, and PSNR against the first path's."""
    from condiff.data.io import from_model
    from condiff.diffusion import sample
    from condiff.diffusion.objectives import decode_target
    from condiff.evaluate.metrics import psnr
    from condiff.export.runtime import OrtPipeline

    mc, d = base.cfg.model, base.cfg.diffusion
    cin, cout = mc.in_img_channels, mc.out_img_channels
    numpy = isinstance(engine, OrtPipeline)
    net = engine.network if numpy else engine
    row: dict = {"path": name}
    dev = torch.device("cpu")
    for b in batches:
        g = torch.Generator().manual_seed(b)
        x, t = torch.randn(b, cin, size, size, generator=g), torch.full((b,), 500)
        cond = torch.rand(b, cin - cout, size, size, generator=g) * 2 - 1
        xT = torch.randn(b, cout, size, size, generator=g)
        if numpy:
            x, t = x.numpy(), t.numpy()

        def run(cond=cond, xT=xT) -> Tensor:
            if numpy:  # a finished sample: residual added, clipped
                y = engine(cond.numpy(), sampler="dpmpp_2m", steps=steps, noise=xT.numpy())
                return torch.from_numpy(y)
            return sample(
                net,
                cond,
                base.schedule,
                target_channels=cout,
                steps=steps,
                x_T=xT,
                objective=d.objective,
                clip_value=d.target_scale,
            )

        with torch.no_grad():
            row[f"call_b{b}_ms"] = 1000 * timer(dev, lambda x=x, t=t: net(x, t), repeats)
            y = run()  # also the warm-up of the timed samples
            row[f"sample_b{b}_s"] = timer(dev, run, max(1, repeats - 1), warmup=0)
        ref_b = ref.setdefault(b, y)
        if numpy:  # compare finished samples
            ref_b = decode_target(ref_b, cond, residual=d.residual, scale=d.target_scale)
            ref_b = ref_b.clamp(-1, 1)
        row[f"psnr_vs_fp32_b{b}"] = float(
            np.mean([psnr(from_model(y[i]), from_model(ref_b[i])) for i in range(b)])
        )
    return row


def format_deploy(rows: list[dict], batches: tuple[int, ...], steps: int) -> str:
    cols = [Col("path", 28, left=True)]
    for b in batches:
        cols += [
            Col(f"call b{b} ms", 13),
            Col("(x)", 6, ".2f"),
            Col(f"{steps}-step b{b} s", 15, ".2f"),
            Col("(x)", 6, ".2f"),
            Col("dB vs fp32", 11),
        ]
    cells = []
    for r in rows:
        line: list[object] = [r["path"]]
        for b in batches:
            c, smp = r[f"call_b{b}_ms"], r[f"sample_b{b}_s"]
            line += [
                c,
                rows[0][f"call_b{b}_ms"] / c,
                smp,
                rows[0][f"sample_b{b}_s"] / smp,
                r[f"psnr_vs_fp32_b{b}"],
            ]
        cells.append(line)
    return table(cols, cells)


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
    """CPU deployment paths side by side (module docstring). ``quantize``: keyword arguments
    for :func:`condiff.export.quantize.quantize_run` (calibration, gate)."""
    from condiff.export.onnx import export_onnx
    from condiff.export.quantize import quantize_run
    from condiff.infer.pipeline import load

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = load(checkpoint, device="cpu", compile=False, graphs=False)
    s = size or base.cfg.data.crop_size
    fp32_onnx, _ = export_onnx(checkpoint, out / "fp32.onnx")
    int8_onnx, gate = quantize_run(
        checkpoint, out / "int8.onnx", force=True, fp32_onnx=fp32_onnx, **(quantize or {})
    )
    rows: list[dict] = []
    ref: dict[int, Tensor] = {}
    for name, make in engines(base, fp32_onnx, int8_onnx).items():
        engine = make()
        rows.append(time_path(name, engine, base, batches, s, steps, repeats, ref))
        del engine  # free it before the next one
        gc.collect()
        print(f"  {name}: done", flush=True)
    report_deploy(rows, checkpoint, s, batches, steps, gate, quantize, json_path)
    return rows


def report_deploy(rows, checkpoint, size, batches, steps, gate, quantize, json_path) -> None:
    from condiff.export.quantize import MAX_LOSS_DB

    cpu = cpu_info()
    isa = " ".join(cpu["isa"]) or "none of " + " ".join(ISA_FLAGS)  # type: ignore[arg-type]
    print(f"\ncondiff bench --cpu-deploy: {checkpoint}, {size}x{size}, torch {torch.__version__}")
    print(f"CPU: {cpu['model']}, {cpu['cores']} logical cores; instruction sets: {isa}")
    print(format_deploy(rows, batches, steps))
    print(
        "(x): speed-up against eager fp32 in this run. dB vs fp32: PSNR of the samples against "
        "eager fp32's, same noise."
    )
    max_loss = (quantize or {}).get("max_loss_db", MAX_LOSS_DB)
    int8_ok = gate.loss_db <= max_loss
    verdict = "passed" if int8_ok else f"failed (allowed {max_loss} dB)"
    print(f"int8 accuracy gate (held-out images, vs targets): {gate}: {verdict}")
    best = fastest_paths(rows, batches, int8_ok)
    for b, (path, x) in best.items():
        print(
            f"fastest accurate path on this CPU at batch {b}: {path} ({x:.2f}x eager fp32):\n"
            f"  {DEPLOY_COMMANDS[path].replace('RUN', str(checkpoint))}"
        )
    print("The best path depends on the CPU (its cores and instruction sets): measure on yours.")
    if json_path:
        fastest = {str(b): v[0] for b, v in best.items()}
        record = {"cpu": cpu, "rows": rows, "gate": str(gate), "fastest": fastest}
        Path(json_path).write_text(json.dumps(record, indent=2))
