"""Post-training static int8 through ONNX Runtime (QDQ), calibrated along sampling trajectories.

Diffusion activations change with the timestep, so calibration records the network's real inputs
``(x_concat, t)`` at every step of real sampling runs on calibration images (the approach of
Q-Diffusion, Li et al. 2023, and PTQ4DM, Shang et al. 2023), not inputs at one timestep.
Only Conv, Gemm and MatMuls with a weight operand are quantized; the attention's
activation-by-activation MatMuls and Softmax stay in float (quantizing them was slower and less
accurate in the feasibility study quoted in issue 7), and so do the first and last convolutions.

The accuracy gate samples held-out images with the same seeds through the fp32 and the int8
model and refuses to write the int8 model when its PSNR against the targets falls more than
``max_loss_db`` (default 0.3 dB) below the fp32 model's.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from condiff.data.io import from_model
from condiff.evaluate.metrics import psnr, ssim

MAX_LOSS_DB = 0.3


class GateError(RuntimeError):
    """The int8 model loses more quality than the gate allows; nothing was written."""


@dataclass
class GateReport:
    images: int
    psnr_int8_vs_fp32: float
    fp32_psnr: float
    int8_psnr: float
    fp32_ssim: float
    int8_ssim: float

    @property
    def loss_db(self) -> float:
        return self.fp32_psnr - self.int8_psnr

    def __str__(self) -> str:
        return (
            f"{self.images} held-out images, same seeds: int8 vs fp32 samples {self.psnr_int8_vs_fp32:.2f} dB; "
            f"against targets fp32 {self.fp32_psnr:.2f} dB / SSIM {self.fp32_ssim:.4f}, int8 "
            f"{self.int8_psnr:.2f} dB / SSIM {self.int8_ssim:.4f} (loss {self.loss_db:+.2f} dB)"
        )


class Recorder:
    """Wraps a network and keeps every (x_concat, t) it is called with, as float32 numpy."""

    def __init__(self, net) -> None:
        self.net, self.inputs = net, []

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        self.inputs.append(
            {"x_concat": x.detach().float().cpu().numpy(), "time": t.detach().long().cpu().numpy()}
        )
        return self.net(x, t)


def trajectory_inputs(pipe, conds: list[Tensor], *, steps: int = 10, seed: int = 0) -> list[dict]:
    """Network inputs recorded along ``steps``-step samplings of each condition (all timesteps)."""
    rec = Recorder(pipe.net)
    old = pipe.net
    pipe.net = rec
    try:
        for i, c in enumerate(conds):
            pipe(c[None], steps=steps, generator=torch.Generator().manual_seed(seed + i))
    finally:
        pipe.net = old
    return rec.inputs


def kept_float(model_path: Path) -> list[str]:
    """Nodes left in float: MatMuls with no initializer operand (attention's activation x
    activation products) and the network's first and last convolutions (the image in and the
    prediction out; in int8 they cost 0.15 dB of sample PSNR on the demo model, see NOTES)."""
    import onnx

    model = onnx.load(str(model_path))
    inits = {i.name for i in model.graph.initializer}
    consts = {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    return [
        n.name
        for n in model.graph.node
        if n.op_type == "MatMul" and not any(i in inits or i in consts for i in n.input)
    ] + ([convs[0], convs[-1]] if convs else [])


def quantize_onnx(fp32_path: str | Path, output: str | Path, calibration: Iterable[dict]) -> Path:
    """Static int8 QDQ quantization of Conv, Gemm and weight MatMuls (per-channel weights)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, items: Iterable[dict]) -> None:
            self.it = iter(items)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    out = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            Reader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["Conv", "Gemm", "MatMul"],
            nodes_to_exclude=kept_float(pre),
            per_channel=True,
            activation_type=QuantType.QUInt8,  # u8 x s8: the x86 VNNI pairing; s8 activations fail type checks at opset 23
            weight_type=QuantType.QInt8,
        )
    return out


def gate(
    fp32_pipe, int8_pipe, items: list[tuple[str, Tensor, Tensor]], *, steps: int = 20, seed: int = 0
) -> GateReport:
    """Sample held-out (name, cond, target) with both engines and the same seeds; compare."""
    m: dict[str, list[float]] = {k: [] for k in ("x", "fp", "q", "fs", "qs")}
    for i, (_, cond, target) in enumerate(items):
        a = fp32_pipe(cond[None], steps=steps, generator=torch.Generator().manual_seed(seed + i))[0]
        b = int8_pipe(cond[None], steps=steps, generator=torch.Generator().manual_seed(seed + i))[0]
        fa, fb, ft = from_model(a), from_model(b), from_model(target)
        m["x"].append(psnr(fb, fa))
        m["fp"].append(psnr(fa, ft))
        m["q"].append(psnr(fb, ft))
        m["fs"].append(ssim(fa, ft))
        m["qs"].append(ssim(fb, ft))
    mean = {k: float(np.mean(v)) for k, v in m.items()}
    return GateReport(len(items), mean["x"], mean["fp"], mean["q"], mean["fs"], mean["qs"])


def quantize_run(
    checkpoint: str | Path,
    output: str | Path,
    *,
    calibration: str | None = None,
    calibration_inputs: list[dict] | None = None,
    calib_images: int = 4,
    calib_steps: int = 10,
    gate_steps: int = 20,
    max_side: int | None = 128,
    max_loss_db: float = MAX_LOSS_DB,
    force: bool = False,
    fp32_onnx: str | Path | None = None,
) -> tuple[Path | None, GateReport]:
    """Export, calibrate along trajectories, quantize, gate; returns (written path or None, report).

    ``calibration``: a folder of clean images for the run's task, or None for the run's own
    training images. ``calibration_inputs`` replaces the recorded inputs (for tests and experts).
    ``fp32_onnx``: this checkpoint's fp32 export (with its ``.json``), already written by
    :func:`condiff.export.onnx.export_onnx`; it is quantized instead of exporting again.
    """
    from condiff.evaluate.run import run_items
    from condiff.export.onnx import export_onnx, load_onnx
    from condiff.infer.pipeline import load

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if fp32_onnx is None:
            fp32, _ = export_onnx(checkpoint, Path(tmp) / "fp32.onnx")
        else:
            fp32 = Path(fp32_onnx)  # read in place; its .json beside it
        pipe = load(checkpoint, device="cpu", compile=False, graphs=False)
        if calibration_inputs is None:
            calib = run_items(
                pipe, calibration, max_side=max_side, limit=calib_images, held_out=False
            )
            calibration_inputs = trajectory_inputs(
                pipe, [it.cond for it in calib], steps=calib_steps
            )
        q = Path(tmp) / "int8.onnx"
        quantize_onnx(fp32, q, calibration_inputs)
        shutil.copy(fp32.with_suffix(".json"), q.with_suffix(".json"))
        held = run_items(pipe, None, max_side=max_side)
        report = gate(
            load_onnx(fp32),
            load_onnx(q),
            [(h.name, h.cond, h.target) for h in held],
            steps=gate_steps,
        )
        if report.loss_db > max_loss_db and not force:
            raise GateError(
                f"int8 model refused: {report}; allowed loss {max_loss_db} dB "
                "(--force writes it anyway)"
            )
        shutil.copy(q, out)
        shutil.copy(q.with_suffix(".json"), out.with_suffix(".json"))
    return out, report
