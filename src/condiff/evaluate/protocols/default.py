"""The default protocol: PSNR/SSIM/MAE on [0, 1] against targets, on a run's own held-out
images, on a paired folder (``--data``), or on clean images degraded by the run's task
(``--images``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from condiff.config import DataConfig
from condiff.data.datasets import full_images, paired_source, split, task_source
from condiff.evaluate.metrics import all_metrics
from condiff.evaluate.protocols.base import Metric, Protocol
from condiff.evaluate.report import EvalItem


@dataclass
class DefaultProtocol(Protocol):
    """``pipe``: the loaded model; ``data`` a paired root, else clean images (``items``'
    folder) or the run's held-out split, degraded by the run's task; ``work`` where bundled
    photographs are written."""

    pipe: object = None
    data: str | None = None
    work: Path = Path("runs")
    max_side: int | None = None
    held_out: bool = True
    wide: bool = False
    quantize: bool = False
    headline: tuple[Metric, ...] = (
        Metric("psnr", "PSNR (dB)"),
        Metric("ssim", "SSIM", ".4f"),
        Metric("mae", "MAE", ".4f"),
    )
    notes: list[str] = field(default_factory=list)

    def items(self, folders, *, color, limit=None, skipped=None) -> list[EvalItem]:
        if len(folders) > 1:
            raise ValueError("--images takes one folder unless --protocol sr|denoise|jpeg")
        source, indices = self._source(folders[0] if folders else None, skipped)
        if limit:
            indices = indices[:limit]
        pipe = self.pipe
        if (source.target_channels, source.cond_channels) != (
            pipe.target_channels,  # type: ignore[attr-defined]
            pipe.cond_channels,  # type: ignore[attr-defined]
        ):
            raise ValueError(
                f"the evaluation data has {source.target_channels}-channel targets and "
                f"{source.cond_channels}-channel conditions; the model expects "
                f"{pipe.target_channels} and {pipe.cond_channels}"  # type: ignore[attr-defined]
            )
        mult = source.task.size_multiple() if source.task else 1
        self._task, self._cond_channels = source.task, source.cond_channels
        return [
            EvalItem(name, cond, target)
            for name, cond, target in full_images(source, indices, mult, self.max_side, skipped)
        ]

    def _source(self, images: Path | None, skipped):
        cfg = self.pipe.cfg  # type: ignore[attr-defined]
        if self.data:
            source = paired_source(DataConfig(kind="paired", root=self.data))
            return source, list(range(len(source)))
        dc = DataConfig(
            kind="task",
            root=str(images) if images else cfg.data.root,
            task=cfg.data.task,
            color=cfg.data.color,
            crop_size=cfg.data.crop_size,
            val_count=cfg.data.val_count,
        )
        source = task_source(dc, bundled_dest=self.work / "data", skipped=skipped)
        if images:
            return source, list(range(len(source)))
        return source, split(source, cfg.data.val_count)[0 if not self.held_out else 1]

    def has_baseline(self) -> bool:
        tc = self.pipe.target_channels  # type: ignore[attr-defined]
        return self._task is not None or self._cond_channels in (tc, 1)

    def baseline(self, cond: Tensor) -> Tensor:
        tc = self.pipe.target_channels  # type: ignore[attr-defined]
        if self._task is not None:
            return self._task.baseline(cond, tc)
        return cond[:tc] if cond.shape[0] >= tc else cond[:1].expand(tc, -1, -1)

    def score(self, item, pred, target) -> dict[str, float]:
        return all_metrics(pred, target)
