"""Inference: load a checkpoint, sample at any size (tiled), uncertainty from several samples."""

from condiff.infer.pipeline import Pipeline, load, resolve_device
from condiff.infer.tiling import TiledModel

__all__ = ["Pipeline", "TiledModel", "load", "resolve_device"]
