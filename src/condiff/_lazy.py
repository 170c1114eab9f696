"""Lazy package exports (PEP 562), so that importing a package does not import torch.

The ONNX Runtime engine (``condiff.export.runtime``) runs where only numpy, Pillow and onnxruntime
are installed; the packages on its import path therefore load their torch-based members on first
attribute access.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, members: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``name`` from ``members[name]`` (a module path)."""

    def __getattr__(name: str) -> Any:
        if name in members:
            return getattr(importlib.import_module(members[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
