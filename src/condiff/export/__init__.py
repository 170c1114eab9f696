"""Deployment: ONNX export, int8 quantization and the ONNX Runtime engines.

``condiff.export.runtime`` needs only numpy, Pillow and onnxruntime (no torch).
"""

from typing import TYPE_CHECKING

from condiff._lazy import lazy_exports

_ONNX, _Q = "condiff.export.onnx", "condiff.export.quantize"
_MEMBERS = {
    "MAX_LOSS_DB": _Q,
    "OPSET": _ONNX,
    "ExportError": _ONNX,
    "GateError": _Q,
    "GateReport": _Q,
    "OrtNetwork": _ONNX,
    "OrtPipeline": "condiff.export.runtime",
    "export_onnx": _ONNX,
    "load_onnx": _ONNX,
    "quantize_run": _Q,
}
__getattr__ = lazy_exports(__name__, _MEMBERS)
__all__ = [
    "MAX_LOSS_DB",
    "OPSET",
    "ExportError",
    "GateError",
    "GateReport",
    "OrtNetwork",
    "OrtPipeline",
    "export_onnx",
    "load_onnx",
    "quantize_run",
]

if TYPE_CHECKING:
    from condiff.export.onnx import OPSET, ExportError, OrtNetwork, export_onnx, load_onnx
    from condiff.export.quantize import MAX_LOSS_DB, GateError, GateReport, quantize_run
    from condiff.export.runtime import OrtPipeline
