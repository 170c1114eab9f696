"""Deployment: ONNX export and the ONNX Runtime engine."""

from condiff.export.onnx import OPSET, ExportError, OrtNetwork, export_onnx, load_onnx
from condiff.export.quantize import MAX_LOSS_DB, GateError, GateReport, quantize_run

__all__ = [
    "MAX_LOSS_DB",
    "OPSET",
    "ExportError",
    "GateError",
    "GateReport",
    "OrtNetwork",
    "export_onnx",
    "load_onnx",
    "quantize_run",
]
