"""``condiff evaluate``: pick the images (run's held-out split, a paired folder, or clean images
+ the run's task), run the sweep, write the report folder."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from condiff.config import DataConfig
from condiff.data.datasets import full_images, paired_source, split, task_source
from condiff.evaluate.report import (
    EvalItem,
    Method,
    Report,
    default_methods,
    evaluate,
    generic_score,
    write_report,
)
from condiff.evaluate.sr import bicubic_baseline, sr_items, sr_score, write_sr_report
from condiff.infer.pipeline import Pipeline, load, resolve_device
from condiff.infer.run import default_dtype


def run_dir_of(pipe: Pipeline) -> Path:
    src = pipe.source
    assert src is not None
    return src.parent.parent if src.parent.name == "checkpoints" else src


def eval_items(
    pipe: Pipeline,
    *,
    data: str | None,
    images: str | None,
    max_side: int | None = None,
    limit: int | None = None,
    held_out: bool = True,
    skipped: list[tuple[Path, str]] | None = None,
):
    """(items, baseline): a paired folder, clean images + the run's task, or the run's own
    held-out split (``held_out=False``: its training split instead, e.g. for calibration)."""
    cfg = pipe.cfg
    if data:
        source = paired_source(DataConfig(kind="paired", root=data))
        indices = list(range(len(source)))
    else:
        dc = DataConfig(
            kind="task",
            root=images or cfg.data.root,
            task=cfg.data.task,
            color=cfg.data.color,
            crop_size=cfg.data.crop_size,
            val_count=cfg.data.val_count,
        )
        source = task_source(dc, bundled_dest=run_dir_of(pipe) / "data", skipped=skipped)
        indices = (
            list(range(len(source)))
            if images
            else split(source, cfg.data.val_count)[1 if held_out else 0]
        )
    if limit:
        indices = indices[:limit]
    mult = source.task.size_multiple() if source.task else 1
    items = []
    for name, cond, target in full_images(source, indices, mult, max_side, skipped):
        items.append(EvalItem(name, cond, target))
    if (source.target_channels, source.cond_channels) != (pipe.target_channels, pipe.cond_channels):
        raise ValueError(
            f"the evaluation data has {source.target_channels}-channel targets and "
            f"{source.cond_channels}-channel conditions; the model expects "
            f"{pipe.target_channels} and {pipe.cond_channels}"
        )
    tc = pipe.target_channels
    baseline = None
    if source.task is not None:
        task = source.task

        def baseline(c: Tensor) -> Tensor:
            return task.baseline(c, tc)
    elif source.cond_channels == tc or source.cond_channels == 1:

        def baseline(c: Tensor) -> Tensor:
            return c[:tc] if c.shape[0] >= tc else c[:1].expand(tc, -1, -1)

    return items, baseline


def evaluate_run(
    checkpoint: str | Path,
    *,
    out_dir: str | Path | None = None,
    data: str | None = None,
    images: str | list[str] | None = None,
    protocol: str = "default",
    estimate: str = "both",
    num_samples: int = 1,
    sweep: bool = False,
    samplers: list[str] | None = None,
    steps: list[int] | None = None,
    seed: int = 0,
    device: str = "auto",
    dtype: str | None = None,
    limit: int | None = None,
    max_side: int | None = None,
    progress: bool = True,
    compile: bool | None = None,
    graphs: bool | None = None,
    use_ema: bool = True,
    grids: bool = True,
    strict: bool = False,
) -> Report:
    """Score a run's estimates and write a report folder (default ``RUN/eval``).

    ``protocol="default"``: PSNR/SSIM/MAE on [0, 1] against the targets, on the run's held-out
    images, a paired folder (``data``) or clean images degraded by the run's task (``images``).
    ``protocol="sr"``: the field's super-resolution protocol (:mod:`condiff.evaluate.sr`) on one
    or more folders of high-resolution test images (``images``; each folder a test set).
    ``estimate``: "mean", "sample" or "both"; ``num_samples=K > 1`` adds the mean of K samples.
    Unreadable image files are listed in ``report.skipped`` (and report.md) and left out;
    ``strict=True`` stops at the first instead.
    """
    if protocol not in ("default", "sr"):
        raise ValueError(f"unknown protocol {protocol!r}; expected 'default' or 'sr'")
    if estimate not in ("both", "mean", "sample"):
        raise ValueError(f"--estimate must be mean, sample or both, got {estimate!r}")
    if num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {num_samples}")
    dev = resolve_device(device)
    pipe = load(
        checkpoint,
        device=dev,
        dtype=dtype or default_dtype(dev),
        compile=compile,
        graphs=graphs,
        use_ema=use_ema,
    )
    folders = [images] if isinstance(images, str) else list(images or [])
    samplers = samplers or (["ddim", "dpmpp_2m", "heun"] if sweep else [pipe.cfg.sample.sampler])
    steps = steps or ([5, 10, 20, 50] if sweep else [pipe.cfg.sample.steps])
    methods = default_methods(samplers, steps, estimate, num_samples)
    grid_sample = Method("sample", pipe.cfg.sample.sampler, pipe.cfg.sample.steps)
    if grid_sample not in methods:
        grid_sample = next((m for m in methods if m.estimate == "sample"), grid_sample)
    out = Path(out_dir) if out_dir else run_dir_of(pipe) / "eval"
    skipped: list[tuple[Path, str]] | None = None if strict else []
    if protocol == "sr":
        task = pipe.cfg.data.task
        if task.name != "super_resolution" or not folders:
            raise ValueError(
                "--protocol sr needs a super-resolution run and --images FOLDER [FOLDER ...] "
                f"of high-resolution test images (this run's task: {task.name})"
            )
        color = "gray" if pipe.target_channels == 1 else "rgb"
        items = sr_items(folders, task.factor, color, limit=limit, skipped=skipped)
        baseline, score, quantize = bicubic_baseline, sr_score(task.factor), True

        def write(report: Report) -> None:
            write_sr_report(report, task.factor)

    else:
        if len(folders) > 1:
            raise ValueError("--images takes one folder unless --protocol sr")
        items, baseline = eval_items(
            pipe,
            data=data,
            images=folders[0] if folders else None,
            max_side=max_side,
            limit=limit,
            skipped=skipped,
        )
        score, quantize = generic_score, False

        def write(report: Report) -> None:
            write_report(report, has_baseline=baseline is not None)

    with torch.inference_mode():
        report = evaluate(
            pipe,
            items,
            methods=methods,
            baseline=baseline,
            out_dir=out,
            seed=seed,
            progress=progress,
            grid_sample=grid_sample,
            score=score,
            quantize=quantize,
            grids=grids,
        )
    write(report)
    return _with_skipped(report, skipped)


def _with_skipped(report: Report, skipped: list[tuple[Path, str]] | None) -> Report:
    """Record the skipped files in the report and at the end of its report.md."""
    if skipped:
        report.skipped = skipped
        assert report.out_dir is not None
        md = report.out_dir / "report.md"
        lines = ["", f"Skipped {len(skipped)} unreadable file(s):", ""]
        lines += [f"- `{p}`: {why}" for p, why in skipped]
        md.write_text(md.read_text() + "\n".join(lines) + "\n")
    return report
