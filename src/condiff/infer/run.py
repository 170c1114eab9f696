"""``condiff sample``: files in, files out (names kept), with optional uncertainty maps.

An engine turns a batch of conditions into samples: :func:`torch_engine` (a run folder, in
PyTorch) or :func:`condiff.export.runtime.ort_engine` (an exported model, numpy and ONNX Runtime
only: this module imports torch only for the torch engine). The file handling is shared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from PIL import Image

from condiff.data.io import (
    ImageError,
    estimate_noise_level,
    list_images,
    probe_images,
    read_image,
    with_noise_map_np,
)
from condiff.files import atomic_write_text
from condiff.infer.outputs import NonFiniteOutput, write_samples

if TYPE_CHECKING:
    import torch

    from condiff.config import RunConfig

# conds (B, C, H, W) in [-1, 1], batch index -> samples (B, K, C, H, W) in [-1, 1]
Engine = Callable[[np.ndarray, int], np.ndarray]


class CondLayout(NamedTuple):
    """What an engine's condition holds: ``channels`` in all, the last of them a noise-level map
    where ``noise_map`` (a denoiser trained with ``data.task.noise_map``)."""

    channels: int
    noise_map: bool = False

    @classmethod
    def of(cls, cfg: RunConfig) -> CondLayout:
        return cls(cfg.model.cond_channels, cfg.noise_map)


def default_dtype(device: torch.device) -> str:
    return "bf16" if device.type == "cuda" else "fp32"


def resize_bicubic_np(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of (C, H, W) float32 with Pillow (equals ``F.interpolate(..., bicubic,
    antialias=True)``, the training degradation's resize, to ~1e-7 when enlarging)."""
    h, w = size
    return np.stack(
        [np.asarray(Image.fromarray(c, mode="F").resize((w, h), Image.BICUBIC)) for c in x]
    )


# ``--noise-level``: sigma on the 0-255 scale, or "auto" (estimated per image)
NoiseLevel = float | str | None


@dataclass
class SampleReport:
    """What ``condiff sample`` did: files written, images done, the files it skipped, and the
    noise levels it estimated (``noise_level="auto"``)."""

    written: list[Path]
    images: int
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    noise_levels: dict[Path, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{self.images} image(s) done, {len(self.written)} file(s) written"]
        if self.skipped:
            lines[0] += f"; {len(self.skipped)} skipped:"
            # an ImageError's message already starts with the file's name
            lines += [f"  {w if w.startswith(str(p)) else f'{p}: {w}'}" for p, w in self.skipped]
        if self.noise_levels:
            v = np.array(list(self.noise_levels.values()))
            lines.append(
                f"noise level estimated (std, 0-255 scale): median {np.median(v):.1f}, "
                f"{v.min():.1f} to {v.max():.1f} over {len(v)} image(s)"
            )
        return "\n".join(lines)


def sample_files(
    engine: Engine,
    layout: CondLayout | int,
    input_path: str | Path,
    output_dir: str | Path,
    *,
    batch_size: int = 8,
    upscale: int = 1,
    progress: bool = True,
    strict: bool = False,
    noise_level: NoiseLevel = None,
) -> SampleReport:
    """Sample every image under ``input_path`` into ``output_dir`` with ``engine`` (from
    :func:`torch_engine`, or :func:`condiff.export.runtime.ort_engine` for an exported model),
    whose condition is ``layout`` (the engine's; a channel count: images only).

    A file that cannot be read is reported in the result's ``skipped`` and the others are
    written; ``strict=True`` raises :class:`ImageError` at the first bad file instead.
    ``noise_level`` (sigma, 0-255 scale, or ``"auto"``: each image's own estimate, written to
    ``noise-levels.csv`` in ``output_dir``): a denoiser trained with ``data.task.noise_map``
    gets the image plus its noise-level map.
    """
    if batch_size < 1 or upscale < 1:
        raise ValueError("--batch-size and --upscale must be >= 1")
    inp, out = Path(input_path), Path(output_dir)
    files = [inp] if inp.is_file() else list_images(inp)
    if not files:
        raise ImageError(f"no images found in {inp}")
    image_channels = check_layout(layout, noise_level)
    skipped: list[tuple[Path, str]] = []
    # a bad file is an error (--strict) or is reported and skipped; the others are written
    infos = {i.path: i for i in probe_images(files, None if strict else skipped)}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(infos), desc="sample", unit="img")
    written: list[Path] = []
    levels: dict[Path, float] = {}
    done = 0
    color = "gray" if image_channels == 1 else "rgb"
    for bi, batch in enumerate(same_size_batches(infos, batch_size)):
        conds, good = read_conditions(batch, color, upscale, strict, skipped)
        if noise_level is not None:  # the noise-level map, as in training
            conds = add_noise_maps(conds, good, noise_level, levels)
        if conds:
            try:
                res = engine(np.stack(conds).astype(np.float32), bi)
            except NonFiniteOutput as e:  # name the files of the batch
                raise NonFiniteOutput(f"{', '.join(map(str, good))}: {e}") from None
            for p, samples in zip(good, res, strict=True):
                written += write_samples(out, p, samples, infos[p].bit_depth)
            done += len(good)
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if levels:
        rows = "".join(f"{p.name},{v:.2f}\n" for p, v in levels.items())
        written.append(atomic_write_text(out / "noise-levels.csv", "file,noise_level\n" + rows))
    return SampleReport(written, done, skipped, levels)


def add_noise_maps(
    conds: list[np.ndarray], files: list[Path], noise_level: float | str, levels: dict
) -> list[np.ndarray]:
    """Each condition plus its noise-level map: ``noise_level``, or (``"auto"``) the image's
    own estimate (:func:`condiff.data.io.estimate_noise_level`), recorded in ``levels``."""
    if noise_level != "auto":
        return [with_noise_map_np(c, float(noise_level)) for c in conds]
    out = []
    for f, c in zip(files, conds, strict=True):
        try:  # the estimator's own refusal (an image under 3x3), with the file's name
            levels[f] = estimate_noise_level(c)
        except ValueError as e:
            raise ValueError(f"{f}: --noise-level auto: {e}") from None
        out.append(with_noise_map_np(c, levels[f]))
    return out


def check_layout(layout: CondLayout | int, noise_level: NoiseLevel) -> int:
    """The image channels ``condiff sample`` reads for a condition of ``layout``: gray (1) or
    RGB (3), plus the noise-level map's channel, whose value ``noise_level`` gives (a number,
    or ``"auto"``: each image's estimate)."""
    if isinstance(layout, int):
        layout = CondLayout(layout)
    cond_channels, noise_map = layout
    if noise_level is not None:
        if noise_level != "auto" and not (
            isinstance(noise_level, int | float) and 0 <= noise_level <= 255
        ):
            raise ValueError(
                "--noise-level must be a number in [0, 255] (the 0-255 scale) or 'auto', "
                f"got {noise_level!r}"
            )
        if not noise_map:
            raise ValueError(
                "--noise-level is for a denoiser trained with data.task.noise_map; this model "
                f"takes no noise-level map (its condition: {cond_channels} channel"
                f"{'s' if cond_channels != 1 else ''}): leave it out"
            )
        return cond_channels - 1
    if noise_map:
        raise ValueError(
            "this denoiser was trained with data.task.noise_map: pass --noise-level SIGMA, the "
            "inputs' noise std on the 0-255 scale (e.g. 25)"
        )
    if cond_channels not in (1, 3):
        raise ValueError(
            f"this model's condition has {cond_channels} channels; condiff sample reads gray (1) "
            "or RGB (3) images; use the Python API (condiff.load) for other layouts (an "
            "inpainting model's image and mask, say)"
        )
    return cond_channels


def same_size_batches(infos: dict, batch_size: int) -> list[list[Path]]:
    """Files grouped by (H, W), cut into batches of at most ``batch_size``."""
    by_size: dict[tuple[int, int], list[Path]] = {}
    for p, info in infos.items():
        by_size.setdefault((info.height, info.width), []).append(p)
    return [g[i : i + batch_size] for g in by_size.values() for i in range(0, len(g), batch_size)]


def read_conditions(
    batch: list[Path], color: str, upscale: int, strict: bool, skipped: list[tuple[Path, str]]
) -> tuple[list[np.ndarray], list[Path]]:
    """(C, H, W) conditions in [-1, 1] (bicubic-upscaled if asked) and the files they came
    from; a file whose pixels cannot be read raises (``strict``) or is listed in ``skipped``."""
    conds, good = [], []
    for p in batch:
        try:  # a header can be fine and the pixels truncated
            c = read_image(p, color)[0].transpose(2, 0, 1) * 2 - 1  # (C, H, W) in [-1, 1]
        except ImageError as e:
            if strict:
                raise
            skipped.append((p, str(e)))
            continue
        if upscale > 1:
            c = np.clip(resize_bicubic_np(c, (c.shape[1] * upscale, c.shape[2] * upscale)), -1, 1)
        conds.append(c)
        good.append(p)
    return conds, good


def torch_engine(
    checkpoint: str | Path,
    *,
    device: str = "auto",
    dtype: str | None = None,
    compile: bool | None = None,
    graphs: bool | None = None,
    seed: int = 0,
    progress: bool = True,
    **opts,
) -> tuple[Engine, CondLayout]:
    """(engine, condition layout) of a run, checkpoint or ``pretrained:NAME`` in PyTorch.
    ``opts``: the pipeline's options (estimate, sampler, steps, num_samples, overlap). Noise for
    batch ``i`` comes from a generator seeded with ``seed + i``."""
    import torch

    from condiff.infer.pipeline import load, resolve_device

    dev = resolve_device(device)
    pipe = load(
        checkpoint, device=dev, dtype=dtype or default_dtype(dev), compile=compile, graphs=graphs
    )

    def run(conds: np.ndarray, bi: int) -> np.ndarray:
        gen = torch.Generator(dev).manual_seed(seed + bi)
        res = pipe(torch.from_numpy(conds), generator=gen, progress=progress, **opts)
        res = res.float().cpu().numpy()
        return res if res.ndim == 5 else res[:, None]

    return run, CondLayout.of(pipe.cfg)
