"""ONNX export of the network (EMA weights) and an ONNX Runtime engine for the samplers.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export based) at opset 23, where SDPA
becomes one ONNX ``Attention`` op: at opset 18 it is lowered to MatMul -> Softmax -> MatMul,
which materialises 8 x 14400^2 scores per 120x120 block and ran out of 24 GB in ONNX Runtime
for seed-default at batch 1. The dynamo exporter also takes ``Dim`` dynamic shapes (batch, and
sides as multiples of 2^(levels-1)). Every export is checked
in ONNX Runtime against PyTorch on fresh random inputs of another batch and size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from condiff.config import RunConfig

OPSET = 23


class ExportError(RuntimeError):
    """The exported model does not reproduce PyTorch's output."""


def export_onnx(
    checkpoint: str | Path,
    output: str | Path,
    *,
    opset: int = OPSET,
    rtol: float = 1e-3,
    use_ema: bool = True,
    network: str = "diffusion",
) -> tuple[Path, float]:
    """Export a run's network to ``output`` (+ ``output.json`` with its config); return the
    path and the relative error measured in ONNX Runtime. ``network``: "diffusion" (mean and
    sample) or "perceptual" (a perceptual stage's generator: the perceptual estimate)."""
    from condiff.infer.pipeline import load

    pipe = load(checkpoint, device="cpu", use_ema=use_ema, compile=False, graphs=False)
    if network not in ("diffusion", "perceptual"):
        raise ValueError(f"--network must be diffusion or perceptual, got {network!r}")
    if network == "perceptual" and pipe.perceptual_net is None:
        raise ValueError(f"--network perceptual: {checkpoint} has no perceptual stage")
    model = (pipe.perceptual_net if network == "perceptual" else pipe.model).eval()
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    m = pipe.size_multiple
    cin = pipe.cfg.model.in_img_channels
    x = torch.randn(2, cin, 2 * m, 3 * m)
    t = torch.tensor([3, 500])
    b = torch.export.Dim("batch", min=1, max=4096)
    h = torch.export.Dim("h", min=1, max=4096)
    w = torch.export.Dim("w", min=1, max=4096)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (x, t),
            str(out),
            dynamo=True,
            opset_version=opset,
            input_names=["x_concat", "time"],
            output_names=["prediction"],
            external_data=False,  # one self-contained file (the networks are far below 2 GB)
            dynamic_shapes={"x_concat": {0: b, 2: m * h, 3: m * w}, "time": {0: b}},
        )
    meta = {**pipe.cfg.to_dict(), "checkpoint": {"network": network}}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    err = check_onnx(model, out, cin, m)
    if err > rtol:
        raise ExportError(f"{out}: ONNX Runtime differs from PyTorch by {err:.2e} (> {rtol:.0e})")
    return out, err


def check_onnx(model: torch.nn.Module, path: Path, cin: int, m: int, seed: int = 0) -> float:
    """Relative L2 error of ONNX Runtime against PyTorch on fresh inputs (batch 3, non-square)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, cin, 4 * m, 5 * m, generator=g)
    t = torch.randint(0, 1000, (3,), generator=g)
    with torch.no_grad():
        ref = model(x, t).numpy()
    got = OrtNetwork(path)(x, t).numpy()
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


class OrtNetwork:
    """The exported network in ONNX Runtime, callable like the PyTorch one: (x_concat, t) -> pred."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ONNX model not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x_concat: Tensor, t: Tensor) -> Tensor:
        out = self.session.run(
            None,
            {
                "x_concat": x_concat.detach().float().cpu().numpy(),
                "time": t.detach().long().cpu().numpy(),
            },
        )[0]
        return torch.from_numpy(out).to(x_concat.device)


def load_onnx(path: str | Path):
    """A Pipeline whose network calls run in ONNX Runtime (config from ``path.json``)."""
    from condiff.infer.pipeline import Pipeline

    path = Path(path)
    meta = path.with_suffix(".json")
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: the config written beside the ONNX model is missing")
    raw = json.loads(meta.read_text())
    kind = (raw.pop("checkpoint", None) or {}).get("network", "diffusion")
    cfg = RunConfig.from_dict(raw)
    if kind == "perceptual":  # the generator answers the perceptual estimate only
        return Pipeline(
            _refuse, cfg, device=torch.device("cpu"), source=path, perceptual=OrtNetwork(path)
        )
    return Pipeline(OrtNetwork(path), cfg, device=torch.device("cpu"), source=path)


def _refuse(x_concat: Tensor, t: Tensor) -> Tensor:
    raise ValueError(
        "this ONNX file holds a perceptual generator: use estimate='perceptual' (export the "
        "diffusion network for mean and sample)"
    )
