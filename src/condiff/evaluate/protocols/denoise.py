"""The field's denoising protocol (``condiff evaluate --protocol denoise``).

As DnCNN, FFDNet, DRUNet, SwinIR and Restormer score it (KAIR's test scripts): the 8-bit image
read as float in [0, 1]; Gaussian noise of std sigma/255 added, drawn per image from numpy's
legacy generator seeded with 0 (``np.random.seed(0)`` before each image); the noisy input is
neither clipped nor rounded. The estimate is clamped to [0, 1] and rounded to 8 bits; PSNR and
SSIM over the whole image (no border); colour images (CBSD68): PSNR over all RGB channels,
SSIM averaged over them.

Set12's ``04.png`` (starfish) overlaps BSD400, the training set: Set12 is also reported without
it ("Set12 w/o 04").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from condiff.data.io import to_model
from condiff.data.tasks import with_noise_map
from condiff.evaluate.metrics import psnr_255, ssim_255_channels
from condiff.evaluate.protocols.base import (
    Metric,
    Protocol,
    Published,
    by_level,
    read_matching,
    read_sets,
)
from condiff.evaluate.report import EvalItem

SIGMAS = (15.0, 25.0, 50.0)
# Images of a test set that overlap the training set (BSD400); the set is also scored without.
OVERLAPS = {"Set12": ("04",)}


# ANCHORS.md: the DnCNN, DRUNet, SwinIR and Restormer papers' tables as their repositories show.
PUBLISHED = by_level(
    {
        "BM3D / CBM3D (2007)": {
            "Set12": (32.37, 29.97, 26.72),
            "BSD68": (31.07, 28.57, 25.62),
            "CBSD68": (33.52, 30.71, 27.38),
        },
        "DnCNN (Zhang et al. 2017)": {
            "Set12": (32.86, 30.44, 27.18),
            "BSD68": (31.73, 29.23, 26.23),
            "CBSD68": (33.90, 31.24, 27.95),
        },
        "FFDNet (Zhang et al. 2018)": {
            "Set12": (32.75, 30.43, 27.32),
            "BSD68": (31.63, 29.19, 26.29),
            "CBSD68": (33.87, 31.21, 27.96),
        },
        "DRUNet (Zhang et al. 2021)": {
            "Set12": (33.25, 30.94, 27.90),
            "BSD68": (31.91, 29.48, 26.59),
            "CBSD68": (34.30, 31.69, 28.51),
        },
        "SwinIR (Liang et al. 2021)": {
            "Set12": (33.36, 31.01, 27.91),
            "BSD68": (31.97, 29.50, 26.58),
            "CBSD68": (34.42, 31.78, 28.56),
        },
        "Restormer (Zamir et al. 2022)": {
            "Set12": (33.42, 31.08, 28.00),
            "BSD68": (31.96, 29.52, 26.62),
            "CBSD68": (34.40, 31.79, 28.60),
        },
    },
    [f"σ={s:g}" for s in SIGMAS],
)


def noisy(clean: np.ndarray, sigma: float) -> np.ndarray:
    """``clean`` (H, W, C) in [0, 1] plus N(0, (sigma/255)^2) from ``np.random.seed(0)``'s
    stream, as KAIR draws it: float, unclipped."""
    noise = np.random.RandomState(0).normal(0, sigma / 255.0, clean.shape)
    return (clean.astype(np.float64) + noise).astype(np.float32)


@dataclass
class DenoiseProtocol(Protocol):
    sigmas: tuple[float, ...] = SIGMAS
    name: str = "denoise"
    title: str = "condiff evaluation: Gaussian denoising, the field's protocol"
    description: str = (
        "Noise N(0, (sigma/255)^2) added to the 8-bit image, seeded per image (numpy seed 0), "
        "not clipped or rounded; estimates clamped and rounded to 8 bits; PSNR (dB) / SSIM over "
        "the whole image (colour: all RGB channels)."
    )
    baseline_label: str = "noisy input (ours)"
    plot: str = "denoise_psnr.png"
    headline: tuple[Metric, ...] = (Metric("psnr", "PSNR"), Metric("ssim", "SSIM", ".4f"))
    raw_baseline: bool = True  # the noisy input is scored unclipped, as the tables print it
    published: list[Published] = field(default_factory=lambda: list(PUBLISHED))
    notes: list[str] = field(
        default_factory=lambda: [
            "Published rows: the DnCNN, FFDNet, DRUNet, SwinIR and Restormer papers' tables "
            "(one model per noise level for most; DnCNN-B, FFDNet and DRUNet also blind), "
            "trained on BSD400 (+ more data for DRUNet, SwinIR and Restormer) for days. "
            "Set12's 04.png overlaps BSD400: `Set12 w/o 04` leaves it out."
        ]
    )

    def __post_init__(self) -> None:
        for s in self.sigmas:
            if not 0 < s <= 255:
                raise ValueError(f"--sigma must be in (0, 255] (the 0-255 scale), got {s:g}")

    noise_map: bool = False  # the model takes a noise-level map (set by check from its config)

    def check(self, pipe) -> None:
        task = pipe.cfg.data.task
        if pipe.cfg.data.kind == "task" and task.name != "denoising":
            raise ValueError(
                f"--protocol denoise needs a denoising model; this run was trained for {task.name}"
            )
        self.noise_map = pipe.cfg.noise_map

    def items(self, folders, *, color, limit=None, skipped=None) -> list[EvalItem]:
        """Each folder a test set; every image at every sigma (level "σ=25")."""
        want = 1 if color == "gray" else 3
        items = []
        for group, path, clean in read_sets(folders, lambda p: _read(p, want), limit, skipped):
            also = tuple(
                f"{group} w/o {' '.join(names)}"
                for g, names in OVERLAPS.items()
                if g == group and path.stem not in names
            )
            target = to_model(clean)
            for s in self.sigmas:
                cond = to_model(noisy(clean, s))
                if self.noise_map:  # told the level, as FFDNet and DRUNet are
                    cond = with_noise_map(cond, s)
                items.append(EvalItem(path.stem, cond, target, group, level=f"σ={s:g}", also=also))
        return items

    def score(self, item, pred, target) -> dict[str, float]:
        p, t = pred * 255.0, np.round(target * 255.0)
        return {"psnr": psnr_255(p, t), "ssim": ssim_255_channels(p, t)}

    def baseline(self, cond: torch.Tensor) -> torch.Tensor:
        return cond[..., :-1, :, :] if self.noise_map else cond  # the noisy image itself


def _read(path: Path, channels: int) -> np.ndarray:
    """The clean image; a set of the wrong kind for the model is an error naming the file."""
    return read_matching(
        path,
        channels,
        "denoises",
        "gray models on gray sets (Set12, BSD68) and colour models on colour ones (CBSD68)",
    )
