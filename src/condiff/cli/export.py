"""``condiff export``: the network (EMA weights) to ONNX, checked in ONNX Runtime."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "export",
        help="export the network (EMA weights) to ONNX, checked in ONNX Runtime",
        description="Export to ONNX with torch.onnx's dynamo exporter (opset 23, attention as "
        "one Attention op): inputs x_concat (B, C, H, W) and time (B,), dynamic batch and size. "
        "The export is run in ONNX Runtime against PyTorch on fresh inputs; the command fails if "
        "the relative error exceeds --rtol. Writes MODEL.onnx and MODEL.json "
        "(the run config, for `condiff sample --engine onnxruntime`).",
    )
    s.add_argument(
        "--checkpoint", required=True, help="run or checkpoint folder, or pretrained:NAME"
    )
    s.add_argument("--output", required=True, help="the .onnx file to write")
    s.add_argument(
        "--network",
        choices=["diffusion", "perceptual"],
        default="diffusion",
        help="diffusion (default): the network behind mean and sample; perceptual: a perceptual "
        "stage's generator (the perceptual estimate: sample it with --estimate perceptual)",
    )
    s.add_argument("--opset", type=int, default=23)
    s.add_argument("--rtol", type=float, default=1e-3, help="largest accepted relative error")
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from condiff.export import export_onnx

    path, err = export_onnx(a.checkpoint, a.output, opset=a.opset, rtol=a.rtol, network=a.network)
    print(
        f"wrote {path} and {path.with_suffix('.json')} (opset {a.opset}, dynamo exporter); "
        f"ONNX Runtime vs PyTorch relative error {err:.2e} on fresh inputs"
    )
    return 0
