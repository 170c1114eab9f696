"""Image files <-> float arrays. PNG, JPEG, BMP through Pillow; TIFF through tifffile.

Arrays are ``(H, W, C)`` float32 in [0, 1] here; tensors for the network are ``(C, H, W)`` in
[-1, 1] (``to_model`` / ``from_model``).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:  # torch only for to_model/from_model: the ONNX Runtime engine reads images too
    from torch import Tensor

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def _why(e: Exception) -> str:
    """An exception's message without Python object reprs (an upload is ``<_io.BytesIO ...>``)."""
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-f]+>", "the upload", str(e))


def _kind(e: Exception) -> str:
    """The reason a decoder gave, with its type where that is not an OSError/ValueError."""
    text = _why(e) or "no detail"
    return text if isinstance(e, OSError | ValueError) else f"{type(e).__name__}: {text}"


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and what was expected."""


class ImageTooLarge(ImageError):
    """An image has more pixels than allowed (``probe_image(max_pixels=...)``)."""


@dataclass(frozen=True)
class ImageInfo:
    path: Path
    height: int
    width: int
    channels: int
    bit_depth: int  # 8 or 16


def list_images(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def _is_tiff(path: Path) -> bool:
    return path.suffix.lower() in (".tif", ".tiff")


Source = str | Path | bytes  # a file, or an image file's bytes (an upload)


def _source(src: Source) -> tuple[Any, bool, str]:
    """(what Pillow / tifffile open, is it TIFF, the name errors use)."""
    if isinstance(src, bytes):
        if not src:
            raise ImageError("the uploaded image is empty (0 bytes); send a PNG, JPEG or TIFF file")
        tiff = src[:4] in (b"II*\x00", b"MM\x00*")
        return io.BytesIO(src), tiff, "the uploaded image"
    path = Path(src)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file (0 bytes)")
    return path, _is_tiff(path), str(path)


def probe_image(src: Source, max_pixels: int | None = None) -> ImageInfo:
    """Size, channels and bit depth from the file's header (cheap; raises ImageError by name).

    ``max_pixels``: refuse larger images before decoding them (decompression bombs).
    """
    f, tiff, name = _source(src)
    try:
        if tiff:
            import tifffile

            with tifffile.TiffFile(f) as tif:
                page = tif.pages[0]
                shape, dtype = page.shape, page.dtype
            h, w = shape[:2]
            c = 1 if len(shape) == 2 else shape[2]
            depth = 16 if dtype.itemsize >= 2 else 8
        else:
            with Image.open(f) as im:
                w, h = im.size
                mode = im.mode
            c = {"L": 1, "I;16": 1, "I;16B": 1, "I": 1, "LA": 1, "P": 3, "RGB": 3, "RGBA": 3}.get(
                mode
            )
            if c is None:
                raise ImageError(f"{name}: unsupported image mode {mode!r} (expected gray or RGB)")
            depth = 16 if mode in ("I;16", "I;16B", "I") else 8
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own limit, before ours
        raise ImageTooLarge(f"{name}: {_why(e)}") from None
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: unreadable or corrupt image (not a PNG, JPEG, TIFF or BMP file)"
        ) from None
    except Exception as e:  # decoders raise many types on hostile bytes (struct.error, ...)
        raise ImageError(f"{name}: unreadable or corrupt image ({_kind(e)})") from None
    if max_pixels is not None and h * w > max_pixels:
        raise ImageTooLarge(
            f"{name}: {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,}"
        )
    if c not in (1, 2, 3, 4):  # gray, gray + alpha, RGB, RGBA
        raise ImageError(f"{name}: {c} channels; expected a gray or RGB image (1 or 3)")
    return ImageInfo(
        Path(name) if not isinstance(src, bytes) else Path("upload"), int(h), int(w), int(c), depth
    )


MAX_LISTED = 20  # bad files named in one error; the count says how many more


def bad_files_error(bad: list[tuple[Path, str]], what: str) -> ImageError:
    """One error naming every bad file (up to :data:`MAX_LISTED`), so a folder with seven bad
    images is fixed in one pass, not seven. Each reason already names its file."""
    lines = [f"{len(bad)} bad {what} (fix or remove each, then rerun):"]
    lines += [f"  {reason}" for _, reason in bad[:MAX_LISTED]]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    return ImageError("\n".join(lines))


def refuse_bad(bad: list[tuple[Path, str]], what: str) -> None:
    """Raise for the bad files a check found (none: return): one file's own message, or every
    file named in one error (:func:`bad_files_error`)."""
    if len(bad) == 1:
        raise ImageError(bad[0][1])
    if bad:
        raise bad_files_error(bad, what)


def probe_images(
    paths: list[Path], skipped: list[tuple[Path, str]] | None = None
) -> list[ImageInfo]:
    """:func:`probe_image` for each file. A bad file raises :class:`ImageError`, or, when a
    ``skipped`` list is given (batch jobs), is appended there as ``(path, reason)`` and left out."""
    infos = []
    for p in paths:
        try:
            infos.append(probe_image(p))
        except ImageError as e:
            if skipped is None:
                raise
            skipped.append((Path(p), str(e)))
    return infos


def read_image(src: Source, color: str | None = None) -> tuple[np.ndarray, int]:
    """Read ``(H, W, C)`` float32 in [0, 1] and the file's bit depth (8 or 16).

    ``src``: a path, or an image file's bytes. ``color``: "gray" or "rgb" converts; None keeps
    the file's channels (gray 1, RGB 3; alpha dropped).
    """
    f, tiff, name = _source(src)
    try:
        if tiff:
            import tifffile

            arr = tifffile.imread(f)
        else:
            with Image.open(f) as im:
                im.load()
                if im.mode in ("P", "RGBA", "LA", "CMYK", "YCbCr"):
                    im = im.convert("RGB" if im.mode != "LA" else "L")
                arr = np.asarray(im)
    except Exception as e:  # decoders raise many types on hostile bytes (struct.error, ...)
        raise ImageError(f"{name}: unreadable or corrupt image ({_kind(e)})") from None
    if arr.dtype == np.uint8:
        x, depth = arr.astype(np.float32) / 255.0, 8
    elif arr.dtype in (np.uint16, np.int32, np.uint32):
        x, depth = np.clip(arr.astype(np.float32) / 65535.0, 0, 1), 16
    elif arr.dtype.kind == "f":
        x, depth = np.clip(arr.astype(np.float32), 0, 1), 16
    elif arr.dtype == bool:
        x, depth = arr.astype(np.float32), 8
    else:
        raise ImageError(f"{name}: unsupported pixel type {arr.dtype}")
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"{name}: expected a gray or RGB image, got array shape {arr.shape}")
    if x.shape[2] == 2:  # gray + alpha
        x = x[:, :, :1]
    if x.shape[2] == 4:  # RGBA
        x = x[:, :, :3]
    if color == "gray" and x.shape[2] == 3:
        x = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[:, :, None]  # ITU-R 601 luma
    elif color == "rgb" and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    return np.ascontiguousarray(x), depth


def to_model(x: np.ndarray) -> Tensor:
    """(H, W, C) in [0, 1] -> (C, H, W) in [-1, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))) * 2 - 1


def from_model(x: Tensor, clip: bool = True) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) float32 in [0, 1] (clipped unless ``clip=False``)."""
    x = x.detach().float().cpu()
    return (((x.clamp(-1, 1) if clip else x) + 1) / 2).permute(1, 2, 0).numpy()


def noise_level_value(sigma: float) -> float:
    """A noise-level map's value for a noise std ``sigma`` on the 0-255 scale: ``sigma / 127.5
    - 1`` (0 -> -1, 255 -> 1), in [-1, 1] as every condition channel is (``data.task.noise_map``)."""
    return sigma / 127.5 - 1


def with_noise_map_np(cond: np.ndarray, sigma: float) -> np.ndarray:
    """(C, H, W) condition -> (C + 1, H, W): the image plus its noise-level map, the numpy twin
    of :func:`condiff.data.tasks.with_noise_map` (``condiff sample`` and ``condiff serve``)."""
    return np.concatenate([cond, np.full_like(cond[:1], noise_level_value(sigma))])


def estimate_noise_level(cond: np.ndarray, rounds: int = 3, margin: float = 2.0) -> float:
    """The std of white Gaussian noise in a (C, H, W) image in [-1, 1], on the 0-255 scale
    (``--noise-level auto``: FFDNet's use of a noise estimate, for a map model run blind).

    Immerkær's operator (the 3x3 difference of Laplacians, which cancels flat and sloped
    regions), its median absolute response over 0.6745 x 6 (its norm), over all channels. An
    8-bit file clips the noise at black and white, which biases that low (sigma 50: ~46 on
    Set12); so it is re-taken ``rounds`` times over the pixels whose 8x8 block's mean lies
    ``margin`` stds inside [0, 1]. On 8-bit Set12 (sigma 15 / 25 / 50): 15.5 / 25.2 / 48.8 on
    average; fine texture reads as noise (one bundled photograph: 19 at sigma 15).
    """
    x = (np.asarray(cond, dtype=np.float64) + 1) / 2
    if x.ndim != 3:
        raise ValueError(f"a noise level needs a (C, H, W) image, got shape {x.shape}")
    if min(x.shape[1:]) < 3:
        raise ValueError(
            f"a noise level needs an image of at least 3x3 pixels, got {x.shape[2]}x{x.shape[1]}"
        )
    h, w = x.shape[1] // 8 * 8 or x.shape[1], x.shape[2] // 8 * 8 or x.shape[2]
    x = x[:, :h, :w]
    r = (
        x[:, :-2, :-2] - 2 * x[:, :-2, 1:-1] + x[:, :-2, 2:]
        - 2 * x[:, 1:-1, :-2] + 4 * x[:, 1:-1, 1:-1] - 2 * x[:, 1:-1, 2:]
        + x[:, 2:, :-2] - 2 * x[:, 2:, 1:-1] + x[:, 2:, 2:]
    )  # fmt: skip
    r = np.abs(r) / (6 * 0.6745)
    sigma = float(np.median(r))
    if h % 8 or w % 8:  # under 8 px a side: no blocks to choose by
        return min(sigma * 255, 255.0)
    mean8 = x.reshape(x.shape[0], h // 8, 8, w // 8, 8).mean(axis=(2, 4))
    local = np.repeat(np.repeat(mean8, 8, axis=1), 8, axis=2)[:, 1:-1, 1:-1]
    for _ in range(rounds):
        keep = (local > margin * sigma) & (local < 1 - margin * sigma)
        if keep.mean() < 0.02:  # (nearly) all near black or white: keep the last estimate
            break
        sigma = float(np.median(r[keep]))
    return min(sigma * 255, 255.0)


def encode_image(x: np.ndarray, bit_depth: int = 8, fmt: str = "PNG") -> bytes:
    """(H, W, C) in [0, 1] -> file bytes: 8-bit PNG/JPEG/BMP, 16-bit PNG for gray, TIFF."""
    x = np.clip(x, 0, 1)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    buf = io.BytesIO()
    if fmt == "TIFF":
        import tifffile

        dtype, scale = (np.uint16, 65535) if bit_depth == 16 else (np.uint8, 255)
        tifffile.imwrite(buf, np.round(x * scale).astype(dtype))
    elif bit_depth == 16 and x.ndim == 2 and fmt == "PNG":
        Image.fromarray(np.round(x * 65535).astype(np.uint16)).save(buf, format="PNG")
    else:
        Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def format_of(path: str | Path) -> str:
    """The file format a suffix asks for (PNG unless JPEG, BMP or TIFF)."""
    ext = Path(path).suffix.lower()
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        ext, "PNG"
    )


def write_image(path: str | Path, x: np.ndarray, bit_depth: int = 8) -> Path:
    """Write (H, W, C) in [0, 1]: 8-bit PNG/JPEG, or 16-bit TIFF (or PNG for gray). Atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = encode_image(x, bit_depth, format_of(path))
    tmp = Path(tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)[1])
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:  # a write error names no file: name the one that was not written
        if e.filename is None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)
    return path
