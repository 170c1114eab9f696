"""``condiff quantize``: post-training static int8 (ONNX Runtime QDQ) with an accuracy gate."""

from __future__ import annotations

import argparse

from condiff.cli.options import add_int8, int8


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "quantize",
        help="post-training static int8 (ONNX Runtime QDQ) with an accuracy gate",
        description="Export, calibrate on network inputs recorded along real sampling "
        "trajectories (every timestep) of calibration images, quantize Conv/Gemm/weight-MatMul "
        "to int8 (attention's activation MatMuls and Softmax stay float), then sample the run's "
        "held-out images with fp32 and int8 under the same seeds. The int8 model is written only "
        "if its PSNR against the targets is at most --max-loss-db below fp32's (or --force).",
    )
    s.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    s.add_argument("--output", required=True, help="the int8 .onnx file to write")
    s.add_argument(
        "--calibration",
        default=None,
        help="folder of clean images for the run's task (default: the run's training images)",
    )
    add_int8(s)
    s.add_argument(
        "--max-loss-db",
        type=float,
        default=0.3,
        help="largest accepted PSNR loss of int8 against fp32, in dB (default 0.3)",
    )
    s.add_argument(
        "--force", action="store_true", help="write the int8 model even if the gate fails"
    )
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from condiff.export.quantize import quantize_run

    path, report = quantize_run(
        a.checkpoint,
        a.output,
        calibration=a.calibration,
        max_loss_db=a.max_loss_db,
        force=a.force,
        **int8(a),
    )
    print(f"accuracy gate: {report}")
    print(
        f"wrote {path} (int8 QDQ, ONNX Runtime); sample with "
        f"`condiff sample --engine onnxruntime --model {path}`"
    )
    return 0
