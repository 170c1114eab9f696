"""A protocol: how a clean test image becomes an evaluation item, how an estimate is scored,
and which published rows stand beside ours. One small object per protocol."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from condiff.data.io import ImageError, list_images, probe_image, read_image
from condiff.evaluate.report import EvalItem

Key = tuple[str, str]  # (group, level), e.g. ("BSD68", "σ=25"); level "" where there is none


@dataclass(frozen=True)
class Published:
    """A published method's figures: (group, level) -> metric -> value."""

    name: str
    figures: dict[Key, dict[str, float]]


@dataclass(frozen=True)
class Metric:
    key: str  # the column in metrics.csv
    label: str  # what the report calls it
    fmt: str = ".2f"


def read_matching(path: Path, channels: int, task: str, sets: str) -> np.ndarray:
    """The clean 8-bit image as (H, W, C) float in [0, 1], if it is of the model's kind (gray
    for a 1-channel model, colour for a 3-channel one); otherwise an error naming the file.
    ``task``: what the model does ("denoises"), ``sets``: which sets the field scores."""
    info = probe_image(path)
    if (info.channels >= 3) != (channels == 3):
        kind = "colour (RGB)" if info.channels >= 3 else "gray"
        model = "gray" if channels == 1 else "colour"
        raise ValueError(
            f"{path}: a {kind} image, but this model {task} {model} images; the field scores {sets}"
        )
    return read_image(path)[0]


@dataclass
class Protocol:
    """The default protocol's shape; the field's protocols override what differs."""

    name: str = "default"
    title: str = "condiff evaluation"
    description: str = ""
    headline: tuple[Metric, ...] = (
        Metric("psnr", "PSNR (dB)"),
        Metric("ssim", "SSIM", ".4f"),
        Metric("mae", "MAE", ".4f"),
    )
    quantize: bool = True  # round estimates to 8 bits before scoring, as a saved PNG would be
    wide: bool = True  # tables: groups as columns (False: metrics as columns, one group)
    baseline_label: str = "baseline"
    plot: str = ""  # file name of the headline bar plot ("" = none)
    published: list[Published] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, pipe) -> None:
        """Raise ValueError if the model cannot be evaluated this way."""

    def items(
        self,
        folders: list[Path],
        *,
        color: str,
        limit: int | None = None,
        skipped: list[tuple[Path, str]] | None = None,
    ) -> list[EvalItem]:
        raise NotImplementedError

    raw_baseline: bool = False  # score the baseline as is (not clamped or rounded)

    def has_baseline(self) -> bool:
        return True

    def baseline(self, cond: Tensor) -> Tensor:
        """The input row: what the user has (bicubic, the noisy image, the JPEG)."""
        return cond

    def score(self, item: EvalItem, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def sections(self, table) -> list[str]:
        """Extra Markdown after the headline tables (``table(metric, title)`` writes one)."""
        return []


def by_level(
    rows: dict[str, dict[str, tuple[float, ...]]], levels: list[str], metric: str = "psnr"
) -> list[Published]:
    """Published rows given per set as one value per level: ``{name: {set: (v1, v2, ...)}}``."""
    return [
        Published(
            name,
            {
                (s, lv): {metric: v}
                for s, vals in per.items()
                for lv, v in zip(levels, vals, strict=True)
            },
        )
        for name, per in rows.items()
    ]


def read_sets(
    folders: list[Path],
    read: Callable[[Path], Any],
    limit: int | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> Iterator[tuple[str, Path, Any]]:
    """(set name, file, ``read(file)``) for the first ``limit`` images of each folder (a test
    set, named by its folder). An unreadable file raises :class:`ImageError`, or, given
    ``skipped``, is listed there and left out."""
    for folder in folders:
        paths = list_images(folder)
        for path in paths[:limit] if limit else paths:
            try:
                value = read(path)
            except ImageError as e:
                if skipped is None:
                    raise
                skipped.append((path, str(e)))
                continue
            yield Path(folder).name, path, value


def level_sort(levels: list[str]) -> list[str]:
    """Levels in numeric order ("σ=15", "σ=25", "σ=50")."""

    def key(s: str) -> float:
        try:
            return float(s.split("=")[-1])
        except ValueError:
            return 0.0

    return sorted(levels, key=key)
