"""Checkpoints: ``config.json`` + ``model.safetensors`` + ``ema.safetensors`` + ``state.pt``.

Each is written into a temporary folder, flushed to disk, then renamed into place in one atomic
step, so a checkpoint folder is either whole or absent. ``state.pt`` holds only tensors and plain
values (optimizer, LR schedule, scaler, step, RNG) and is read with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CKPT_RE = re.compile(r"^step_(\d{9})$")
FILES = ("config.json", "model.safetensors", "ema.safetensors", "state.pt")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not fit; the message names the file."""


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


Weights = nn.Module | dict[str, torch.Tensor]


def tensors_of(model: Weights) -> dict[str, torch.Tensor]:
    sd = model if isinstance(model, dict) else model.state_dict()
    return {k: v.detach().contiguous().cpu() for k, v in sd.items()}


def save_checkpoint(
    ckpt_root: str | Path,
    step: int,
    *,
    config: dict[str, Any],
    model: Weights,
    ema: Weights,
    state: dict[str, Any],
    keep_last: int = 3,
    extra: dict[str, Weights] | None = None,
) -> Path:
    """Write ``ckpt_root/step_{step:09d}`` atomically and keep the newest ``keep_last``.

    ``extra``: further safetensors files by name (a perceptual run's generator, its EMA and the
    discriminator); ``config.json`` lists every file, and loading checks they are all there.
    """
    extra = extra or {}
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:09d}"
    tmp = root / f".tmp-step_{step:09d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        files = [*FILES, *extra]
        meta = {"format": "condiff", "step": step, "files": files}
        (tmp / "config.json").write_text(json.dumps({**config, "checkpoint": meta}, indent=2))
        weights = {"model.safetensors": model, "ema.safetensors": ema, **extra}
        for name, w in weights.items():
            tensors = tensors_of(w)
            _refuse_nonfinite(tensors, final / name)
            save_file(tensors, str(tmp / name), metadata={"step": str(step)})
        torch.save(state, tmp / "state.pt")
        for f in files:
            _fsync(tmp / f)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # OSError, or safetensors'/torch's own wrappers of it
        shutil.rmtree(tmp, ignore_errors=True)
        full = getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e)
        why = "the disk is full" if full else str(e)
        raise CheckpointError(
            f"could not write checkpoint {final} ({why}); earlier checkpoints are untouched"
        ) from e
    for old in list_checkpoints(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _refuse_nonfinite(tensors: dict[str, torch.Tensor], file: Path) -> None:
    """A checkpoint never holds NaN or Inf weights: refuse to write one, naming a tensor."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(
            f"{file}: {len(bad)} tensor(s) hold NaN or Inf (e.g. {bad[0]}); not written, earlier "
            "checkpoints are untouched. Try a lower train.lr, or train.precision=bf16"
        )


def add_weights(folder: str | Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    """Add (or replace) one safetensors file in a finished checkpoint and list it in its
    ``config.json``; each file is written beside its place and renamed in, so a reader sees the
    checkpoint before or after, never a half-written file."""
    folder = Path(folder)
    target = folder / name
    tmp = folder / f".tmp-{name}-{os.getpid()}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    _fsync(tmp)
    os.replace(tmp, target)
    raw = read_config(folder)
    meta = raw.setdefault("checkpoint", {"format": "condiff"})
    files = meta.setdefault("files", [f for f in FILES if (folder / f).is_file()])
    if name not in files:
        files.append(name)
        tmp_cfg = folder / f".tmp-config-{os.getpid()}.json"
        tmp_cfg.write_text(json.dumps(raw, indent=2))
        _fsync(tmp_cfg)
        os.replace(tmp_cfg, folder / "config.json")
    _fsync(folder)
    return target


def list_checkpoints(root: str | Path) -> list[Path]:
    """Finished checkpoint folders under ``root``, oldest first (temporary folders ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and CKPT_RE.match(p.name))


def validate_checkpoint(path: str | Path, need_state: bool = True) -> None:
    """Raise CheckpointError naming the first missing or unreadable file."""
    path = Path(path)
    for f in FILES if need_state else FILES[:2]:
        if not (path / f).is_file():
            raise CheckpointError(f"{path / f}: missing (incomplete checkpoint)")
    try:
        meta = read_config(path).get("checkpoint", {})
    except OSError as e:
        raise CheckpointError(f"{path / 'config.json'}: unreadable ({e})") from None
    extra = [f for f in meta.get("files", []) if f not in FILES]
    for f in extra:
        if not (path / f).is_file():
            raise CheckpointError(f"{path / f}: missing (config.json lists it)")
    for f in ("model.safetensors", "ema.safetensors", *extra):
        if need_state or (path / f).is_file():
            read_weights(path / f)


def read_weights(file: str | Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error type for truncated headers
        raise CheckpointError(f"{file}: unreadable or truncated safetensors file ({e})") from None


def read_state(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "state.pt"
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated pickles/zips
        raise CheckpointError(f"{file}: unreadable or truncated training state ({e})") from None


def read_config(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "config.json"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        got = type(raw).__name__ if not isinstance(raw, dict) else "no model section"
        raise CheckpointError(
            f"{file}: expected a run config (a JSON object with a model section), got {got}"
        )
    return raw


def latest_checkpoint(root: str | Path) -> Path | None:
    """Newest checkpoint that is whole; damaged ones are skipped with a warning."""
    import warnings

    for path in reversed(list_checkpoints(root)):
        try:
            validate_checkpoint(path)
            read_state(path)
            return path
        except CheckpointError as e:
            warnings.warn(f"skipping damaged checkpoint: {e}", stacklevel=2)
    return None


def resolve_checkpoint(path: str | Path, need_state: bool = True) -> Path:
    """A run folder (its newest whole checkpoint), a checkpoint folder itself, or
    ``pretrained:NAME`` (weights shipped with condiff, in ``condiff/weights/NAME``)."""
    if str(path).startswith(PRETRAINED):
        return pretrained_folder(str(path))
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if (path / "model.safetensors").exists() or (path / "config.json").exists():
        validate_checkpoint(path, need_state)
        return path
    for root in (path / "checkpoints", path):
        if list_checkpoints(root):
            found = latest_checkpoint(root)
            if found is None:
                raise CheckpointError(f"{root}: no whole checkpoint (all are damaged)")
            return found
    raise CheckpointError(
        f"{path}: not a checkpoint (no model.safetensors) and no checkpoints/step_* inside"
    )


def load_weights(model: nn.Module, file: str | Path) -> None:
    sd = read_weights(file)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(
            f"{file}: weights do not fit the model in config.json ({e})"
        ) from None


PRETRAINED_DIR = Path(__file__).resolve().parent / "weights"
PRETRAINED = "pretrained:"


def shipped() -> list[str]:
    """Names of the pretrained weights shipped with condiff (``pretrained:NAME``)."""
    return sorted(p.parent.name for p in PRETRAINED_DIR.glob("*/config.json"))


def pretrained_folder(spec: str) -> Path:
    """``pretrained:NAME`` -> its folder (config.json + model.safetensors, no training state)."""
    name = spec[len(PRETRAINED) :]
    folder = PRETRAINED_DIR / name
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{spec}: no pretrained weights named {name!r}; shipped: {shipped() or 'none'}"
        )
    validate_checkpoint(folder, need_state=False)
    return folder


def is_pretrained(folder: Path) -> bool:
    """Whether a resolved checkpoint folder is one of the shipped pretrained ones."""
    return folder.resolve().parent == PRETRAINED_DIR


def weights_file(folder: Path, ema: bool = True) -> Path:
    """The EMA weights of a checkpoint, or its only weights where it ships one file."""
    file = folder / ("ema.safetensors" if ema else "model.safetensors")
    if ema and not file.is_file() and (folder / "model.safetensors").is_file():
        return folder / "model.safetensors"
    if not file.is_file():
        raise CheckpointError(f"{file}: missing")
    return file
