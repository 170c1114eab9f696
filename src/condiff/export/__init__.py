"""Deployment: ONNX export and the ONNX Runtime engine."""

from condiff.export.onnx import OPSET, ExportError, OrtNetwork, export_onnx, load_onnx

__all__ = ["OPSET", "ExportError", "OrtNetwork", "export_onnx", "load_onnx"]
