"""Checkpoints: ``config.json`` + ``model.safetensors`` + ``ema.safetensors`` + ``state.pt``
+ ``manifest.json``.

Each is written into a temporary folder, flushed to disk, then renamed into place in one atomic
step, so a checkpoint folder is either whole or absent. ``state.pt`` holds only tensors and plain
values (optimizer, LR schedule, scaler, step, RNG) and is read with ``weights_only=True``.

``manifest.json``, written last inside the same rename, holds the size and SHA-256 of every other
file. Every load (inference, resume, ``init_from``, serve, export; the shipped ``pretrained:``
weights too) checks it, so a flipped byte is refused naming the file instead of running on wrong
weights. A checkpoint from before manifests loads with one warning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from condiff.files import atomic_write_text, why
from condiff.files import sha256 as file_digest

CKPT_RE = re.compile(r"^step_(\d{9})$")
FILES = ("config.json", "model.safetensors", "ema.safetensors", "state.pt")
MANIFEST = "manifest.json"


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
        write_manifest(tmp, files)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)
    except CheckpointError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as e:  # OSError, or safetensors'/torch's own wrappers of it
        reason = why(e, root)  # before the partial files are freed
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(
            f"could not write checkpoint {final} ({reason}); earlier checkpoints are untouched"
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
    """Add (or replace) one safetensors file in a finished checkpoint, list it in its
    ``config.json`` and its manifest. The new checkpoint is built beside the old one (hard links
    to the files it keeps) and swapped in with two renames, so a reader never sees a file that
    its manifest does not vouch for."""
    folder = Path(folder)
    tmp = folder.with_name(f".tmp-{folder.name}-{os.getpid()}")
    old = folder.with_name(f".old-{folder.name}-{os.getpid()}")
    raw = read_config(folder)
    meta = raw.setdefault("checkpoint", {"format": "condiff"})
    files = meta.setdefault("files", [f for f in FILES if (folder / f).is_file()])
    if name not in files:
        files.append(name)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for f in folder.iterdir():
            if f.is_file() and f.name not in (name, "config.json", MANIFEST):
                try:
                    os.link(f, tmp / f.name)
                except OSError:  # a file system without hard links
                    shutil.copy2(f, tmp / f.name)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp / name))
        (tmp / "config.json").write_text(json.dumps(raw, indent=2))
        for f in (name, "config.json"):
            _fsync(tmp / f)
        write_manifest(tmp, [f for f in files if (tmp / f).is_file()])
        os.replace(folder, old)
        os.replace(tmp, folder)
        _fsync(folder.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return folder / name


# --- the manifest ------------------------------------------------------------------------------


def write_manifest(folder: Path, files: list[str]) -> Path:
    """``manifest.json``: the size and SHA-256 of each of ``files``; written to a temporary
    name, flushed and renamed, so it is whole or absent."""
    entries = {
        f: {"bytes": (folder / f).stat().st_size, "sha256": file_digest(folder / f)} for f in files
    }
    atomic_write_text(
        folder / MANIFEST, json.dumps({"format": "condiff-manifest", "files": entries}, indent=1)
    )
    _fsync(folder)
    return folder / MANIFEST


_UNVERIFIED_WARNED: set[Path] = set()
# files whose digest matched, by (size, mtime): a file read twice in one process is hashed once
_VERIFIED: dict[Path, tuple[int, int]] = {}


def manifest_entries(folder: Path) -> dict[str, tuple[int, str]] | None:
    """The manifest's ``{file: (bytes, sha256)}``, or None where the checkpoint has none (one
    warning per folder); a manifest that cannot be read is a CheckpointError."""
    file = folder / MANIFEST
    if not file.is_file():
        if folder.resolve() not in _UNVERIFIED_WARNED:
            import warnings

            _UNVERIFIED_WARNED.add(folder.resolve())
            warnings.warn(
                f"{folder}: no {MANIFEST} (a checkpoint from before condiff 0.3): its files "
                "cannot be verified; loading it as it is",
                stacklevel=4,
            )
        return None
    try:
        entries = json.loads(file.read_text())["files"]
        return {str(n): (int(e["bytes"]), str(e["sha256"])) for n, e in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{file}: unreadable manifest ({e!r})") from None


def _check_size(f: Path, size: int) -> None:
    if not f.is_file():
        raise CheckpointError(f"{f}: missing (the manifest lists it)")
    if f.stat().st_size != size:
        raise CheckpointError(
            f"{f}: {f.stat().st_size} bytes, the manifest says {size} (damaged or truncated)"
        )


def verify_file(f: Path, entries: dict[str, tuple[int, str]] | None = None) -> None:
    """Check one file against its folder's manifest (size, then SHA-256); a file the manifest
    does not list, or a folder without one, passes unchecked."""
    entries = manifest_entries(f.parent) if entries is None else entries
    if not entries or f.name not in entries:
        return
    size, digest = entries[f.name]
    _check_size(f, size)
    st = f.stat()
    key = f.resolve()
    if _VERIFIED.get(key) == (st.st_size, st.st_mtime_ns):
        return
    if file_digest(f) != digest:
        raise CheckpointError(
            f"{f}: its SHA-256 differs from the manifest's (the file is damaged or was changed "
            "after the checkpoint was written); refusing to load it"
        )
    _VERIFIED[key] = (st.st_size, st.st_mtime_ns)


def verify_manifest(folder: Path, skip: tuple[str, ...] = ()) -> bool:
    """Check every file the manifest lists (but ``skip``) for size and SHA-256. Returns False
    where the checkpoint has no manifest; raises CheckpointError naming the first file that
    differs or is gone."""
    entries = manifest_entries(folder)
    if entries is None:
        return False
    for name in entries:
        if name not in skip:
            verify_file(folder / name, entries)
    return True


def list_checkpoints(root: str | Path) -> list[Path]:
    """Finished checkpoint folders under ``root``, oldest first (temporary folders ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and CKPT_RE.match(p.name))


def validate_checkpoint(path: str | Path, need_state: bool = True) -> None:
    """Raise CheckpointError naming the first missing, damaged or unreadable file. With a
    manifest: every file's size, and the SHA-256 of every file (``need_state``, a resume) or of
    ``config.json`` (inference; the weights files are checked as they are read). Without one:
    each weights file read whole."""
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
    entries = manifest_entries(path)
    if entries is not None:
        if need_state:  # a resume reads them all: check every digest now, to fall back early
            verify_manifest(path)
            return
        for name, (size, _) in entries.items():
            _check_size(path / name, size)  # every file there and whole: cheap
        verify_file(path / "config.json", entries)  # the weights: as read_weights reads them
        return
    for f in ("model.safetensors", "ema.safetensors", *extra):
        if need_state or (path / f).is_file():
            read_weights(path / f)


def read_weights(file: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file, checked against its checkpoint's manifest first."""
    verify_file(Path(file))
    try:
        return load_file(str(file))
    except Exception as e:  # safetensors raises its own error type for truncated headers
        raise CheckpointError(f"{file}: unreadable or truncated safetensors file ({e})") from None


def read_state(path: str | Path) -> dict[str, Any]:
    file = Path(path) / "state.pt"
    verify_file(file)
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
