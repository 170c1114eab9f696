"""Inference: load a checkpoint, sample at any size (tiled), uncertainty from several samples."""

from typing import TYPE_CHECKING

from condiff._lazy import lazy_exports

_MEMBERS = {
    "Pipeline": "condiff.infer.pipeline",
    "TiledModel": "condiff.infer.tiling",
    "load": "condiff.infer.pipeline",
    "resolve_device": "condiff.infer.pipeline",
}
__getattr__ = lazy_exports(__name__, _MEMBERS)
__all__ = [
    "Pipeline",
    "TiledModel",
    "load",
    "resolve_device",
]

if TYPE_CHECKING:
    from condiff.infer.pipeline import Pipeline, load, resolve_device
    from condiff.infer.tiling import TiledModel
