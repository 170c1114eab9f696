"""``torch.compile`` with caches that outlive the process.

Inductor keeps compiled kernels and graphs in ``/tmp/torchinductor_$USER`` by default, which a
fresh cluster node or a reboot empties: every run then pays the whole compile again (about 80 s
for the seed-default network's training step on an H200, against 6.5 s from a warm cache;
docs/NOTES.md, "Speed at work"). condiff points Inductor at ``$CONDIFF_CACHE/inductor``
(default ``~/.cache/condiff/inductor``) unless ``TORCHINDUCTOR_CACHE_DIR`` is already set, so the
first run on a machine (or a shared home) compiles and the later ones load.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def compile_cache_dir() -> Path:
    """Inductor's cache folder: ``TORCHINDUCTOR_CACHE_DIR``, else ``$CONDIFF_CACHE/inductor``
    (``~/.cache/condiff/inductor``)."""
    if os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    root = os.environ.get("CONDIFF_CACHE") or Path.home() / ".cache" / "condiff"
    return Path(root) / "inductor"


def compile_module(module: Any, **options: Any) -> Any:
    """``torch.compile(module, **options)`` with Inductor's caches in :func:`compile_cache_dir`."""
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir())
    return torch.compile(module, **options)
