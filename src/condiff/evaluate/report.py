"""Run every method on every evaluation item, score it, and keep the rows.

Every row of a report is one image scored by one method; means are taken per group (a test
set), level (a noise level or JPEG quality, "" where there is none) and method. A protocol
(:mod:`condiff.evaluate.protocols`) makes the items and scores them; this module and the writer
(:mod:`condiff.evaluate.writer`) know none of them.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor

from condiff.data.io import from_model, write_image
from condiff.evaluate.kid import SetScores
from condiff.evaluate.methods import Method, run_method
from condiff.infer.outputs import STD_SCALE  # std maps show 4 x std, as `condiff sample` writes

GRID_ESTIMATES = ("mean", "perceptual", "sample")  # the grids' columns between input and target


@dataclass
class EvalItem:
    name: str
    cond: Tensor  # (C_cond, H, W) in [-1, 1]
    target: Tensor  # (C, H, W) in [-1, 1]
    group: str = ""  # the test set it belongs to ("" when there is one)
    low: Tensor | None = None  # super-resolution: the low-resolution input (C, H/f, W/f)
    level: str = ""  # the degradation's level, e.g. "σ=25" or "q=10" ("" where there is one)
    also: tuple[str, ...] = ()  # further groups it counts in (e.g. a set without an overlap)


@dataclass
class Row:
    group: str
    image: str
    method: str
    estimate: str
    sampler: str
    steps: int
    nfe: int
    seconds: float  # per image, network work only
    metrics: dict[str, float]
    level: str = ""
    also: tuple[str, ...] = ()
    # the method's first call at this input size: compile and warm-up, left out of the timing
    warmup: bool = False


def seconds_per_image(rows: list[Row]) -> float:
    """Mean seconds per image, leaving out each method's first call at each input size (where
    ``torch.compile`` and CUDA graphs pay their warm-up) unless that is all there is."""
    timed = [r.seconds for r in rows if not r.warmup] or [r.seconds for r in rows]
    return float(np.mean(timed))


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    out_dir: Path | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable input files
    notes: list[str] = field(default_factory=list)  # e.g. scores skipped, and why
    # set-level scores (KID, FID on crops) by (group, level, method label)
    set_scores: dict[tuple[str, str, str], dict[str, float]] = field(default_factory=dict)
    # (method label, input shape) pairs already run: their next calls are timed as steady
    warmed: set[tuple[str, tuple[int, ...]]] = field(default_factory=set)

    def metric_names(self) -> list[str]:
        names: list[str] = []
        for r in self.rows:
            names += [k for k in r.metrics if k not in names]
        return names

    def groups(self) -> list[str]:
        """Groups in the order first seen, each extra group right after its main one."""
        out: list[str] = []
        for r in self.rows:
            for g in (r.group, *r.also):
                if g not in out:
                    out.append(g)
        return out

    def levels(self) -> list[str]:
        return list(dict.fromkeys(r.level for r in self.rows))

    def means(self) -> list[dict[str, float | str | int]]:
        """One record per (group, level, method): mean of each metric over its images."""
        by: dict[tuple[str, str, str], list[Row]] = {}
        for r in self.rows:
            for g in (r.group, *r.also):
                by.setdefault((g, r.level, r.method), []).append(r)
        out = []
        for (group, level, method), rows in by.items():
            rec: dict[str, float | str | int] = {
                "group": group,
                "level": level,
                "method": method,
                "estimate": rows[0].estimate,
                "sampler": rows[0].sampler,
                "steps": rows[0].steps,
                "nfe": rows[0].nfe,
                "images": len(rows),
                "seconds_per_image": seconds_per_image(rows),
            }
            for m in self.metric_names():
                vals = [r.metrics[m] for r in rows if m in r.metrics]
                if vals:
                    rec[m] = float(np.mean(vals))
            for k, v in self.set_scores.get((group, level, method), {}).items():
                rec[k if k in ("kid", "fid") else f"kid_{k}"] = v
                if k == "kid":
                    rec["kid_x1000"] = 1000 * v
            out.append(rec)
        return out


Scorer = Callable[[EvalItem, np.ndarray, np.ndarray], dict[str, float]]
ExtraScorer = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def _rgb(x: np.ndarray, c: int) -> np.ndarray:
    x = x[:, :, :c] if x.shape[2] >= c else np.repeat(x[:, :, :1], c, axis=2)
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x[:, :, :3]


def grid_image(panels: list[np.ndarray], channels: int) -> np.ndarray:
    """Panels (H, W, C) in [0, 1] side by side with white gaps, as RGB (H, W', 3)."""
    gap = np.ones((panels[0].shape[0], 4, 3), dtype=np.float32)
    parts: list[np.ndarray] = []
    for p in panels:
        parts += [_rgb(p, channels), gap]
    return np.concatenate(parts[:-1], axis=1)


@dataclass
class Plan:
    """How to run and score: the methods, the baseline, the scorer, and what to write."""

    methods: list[Method]
    baseline: Callable[[Tensor], Tensor] | None
    score: Scorer
    quantize: bool = False  # round estimates to 8 bits before scoring, as a saved PNG would be
    raw_baseline: bool = False  # score the baseline as is: not clamped, not rounded
    extra: ExtraScorer | None = None  # perceptual scores, on the same (quantized) images
    sets: SetScores | None = None  # KID / FID on crops, per set
    grid_sample: Method | None = None
    grids: bool = True  # False: figures only, no images (faster)
    seed: int = 0


def evaluate(
    pipe, items: list[EvalItem], plan: Plan, out_dir: str | Path, progress: bool = True
) -> Report:
    """Run every method on every item and score it; write ``grids/`` (baseline or condition |
    mean | sample | target, and the std of the mean of K) and ``samples/`` (the grid's sample).
    Returns the report; :func:`condiff.evaluate.writer.write_report` turns it into files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report(out_dir=out)
    methods = [m for m in plan.methods if plan.baseline is not None or m.estimate != "baseline"]
    samples = [m for m in methods if m.estimate == "sample"]
    if plan.grid_sample not in methods:
        plan.grid_sample = samples[0] if samples else None
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(methods) * len(items), desc="evaluate", unit="img")
    for it in items:
        _evaluate_item(pipe, it, methods, plan, report, out, bar)
    if bar is not None:
        bar.close()
    if plan.sets is not None:
        report.set_scores = plan.sets.scores()
    return report


def _evaluate_item(pipe, it: EvalItem, methods, plan: Plan, report: Report, out: Path, bar) -> None:
    tgt = from_model(it.target)
    sub = Path(it.group) / it.level if it.level else Path(it.group)
    panels: dict[str, np.ndarray] = {}
    groups = (it.group, *it.also)
    if plan.sets is not None:
        plan.sets.add(groups, it.level, None, tgt)
    for m in methods:
        est, std, dt = run_method(pipe, m, it.cond, plan.baseline, plan.seed)
        key = (m.label, tuple(it.cond.shape))
        warmup = key not in report.warmed
        report.warmed.add(key)
        pred = from_model(est)
        if plan.quantize:
            pred = np.round(pred * 255) / 255
        raw = plan.raw_baseline and m.estimate == "baseline"
        scores = plan.score(it, from_model(est, clip=False) if raw else pred, tgt)
        if plan.extra is not None:
            scores.update(plan.extra(pred, tgt))
        if plan.sets is not None:
            plan.sets.add(groups, it.level, m.label, pred)
        report.rows.append(
            Row(
                it.group,
                it.name,
                m.label,
                m.estimate,
                m.sampler,
                m.steps,
                m.nfe,
                dt,
                scores,
                it.level,
                it.also,
                warmup,
            )
        )
        if m.estimate in ("baseline", "perceptual") or (
            m.estimate == "mean" and "mean" not in panels
        ):
            panels[m.estimate] = pred
        if m == plan.grid_sample and plan.grids:
            panels["sample"] = pred
            write_image(out / "samples" / sub / f"{it.name}.png", pred)
        if std is not None and "std" not in panels:
            panels["std"] = np.clip(std.float().cpu().permute(1, 2, 0).numpy() * STD_SCALE, 0, 1)
        if bar is not None:
            bar.update(1)
    if plan.grids:
        first = panels.get("baseline", from_model(it.cond))
        row = [first, *(panels[k] for k in GRID_ESTIMATES if k in panels), tgt]
        if "std" in panels:
            row.append(panels["std"])
        write_image(out / "grids" / sub / f"{it.name}.png", grid_image(row, tgt.shape[2]))


def grid_caption(report: Report, has_baseline: bool) -> str:
    names = {r.estimate for r in report.rows}
    cols = ["baseline" if has_baseline else "condition"]
    cols += [c for c in GRID_ESTIMATES if c in names]
    cols.append("target")
    if any(r.estimate == "mean" and r.nfe > 1 for r in report.rows):
        cols.append(f"std of the samples (x{STD_SCALE:g})")
    return " | ".join(cols)


def write_csvs(report: Report) -> list[dict]:
    """``metrics.csv`` (per image) and ``summary.csv`` (means); returns the means."""
    out = report.out_dir
    assert out is not None
    names = report.metric_names()
    with (out / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        head = ["group", "level", "image", "method", "estimate", "sampler", "steps", "nfe"]
        w.writerow([*head, "seconds", "warmup", *names])
        for r in report.rows:
            w.writerow(
                [
                    r.group,
                    r.level,
                    r.image,
                    r.method,
                    r.estimate,
                    r.sampler,
                    r.steps,
                    r.nfe,
                    f"{r.seconds:.4f}",
                    int(r.warmup),
                    *(f"{r.metrics[m]:.5f}" if m in r.metrics else "" for m in names),
                ]
            )
    means = report.means()
    with (out / "summary.csv").open("w", newline="") as f:
        keys: list[str] = []
        for m in means:
            keys += [k for k in m if k not in keys]
        w2 = csv.DictWriter(f, fieldnames=keys)
        w2.writeheader()
        w2.writerows(means)
    return means
