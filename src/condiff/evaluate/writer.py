"""The report folder: ``report.md``, CSVs and plots, for any protocol.

Tables: with a wide protocol one table per level (groups as columns, the protocol's headline
metrics in each cell, its published rows below ours); with the default protocol one table with
the metrics as columns. Then the gains over the input, each sample's PSNR gap to the posterior
mean (an exact posterior sample sits 3.01 dB below it), perceptual scores, the protocol's own
sections and notes. Plots: the headline metric per group (with published ticks), quality vs
sampler steps, and the perception-distortion plane (PSNR against LPIPS).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from condiff.evaluate.means import Means
from condiff.evaluate.methods import method_order
from condiff.evaluate.plots import (
    plot_headline,
    plot_kid_lpips,
    plot_pd_plane,
    plot_quality_vs_steps,
)
from condiff.evaluate.protocols.base import Metric, Protocol
from condiff.evaluate.report import Report, grid_caption, write_csvs

POSTERIOR_GAP_DB = 10 * np.log10(2)  # an exact posterior sample: twice the mean's MSE
PERCEPTUAL = (Metric("lpips", "LPIPS", ".3f"), Metric("dists", "DISTS", ".3f"))
SET_LEVEL = (Metric("kid_x1000", "KID x1000", ".2f"), Metric("fid", "FID", ".1f"))
NOT_OFFLINE = (
    "MUSIQ, MANIQA and CLIP-IQA (and TOPIQ, HyperIQA, LIQE, PI) are not computed: their weights "
    "live on model hubs, and condiff never downloads at run time."
)


def _fmt(values: Iterable[tuple[Metric, float | None]]) -> str:
    cells = [format(v, m.fmt) for m, v in values if v is not None]
    return " / ".join(cells) if cells else "-"


def wide_table(mm: Means, level: str, metrics: tuple[Metric, ...], published: bool) -> list[str]:
    head = "| method | NFE | " + " | ".join(mm.groups) + " |"
    lines = [head, "|---|---|" + "---|" * len(mm.groups)]
    for label in mm.labels:
        per = [mm.get(label, g, level) for g in mm.groups]
        if not any(per):
            continue
        first = next(p for p in per if p)
        cells = [_fmt((k, p.get(k.key)) for k in metrics) if p else "-" for p in per]
        lines.append(f"| {label} | {first['nfe'] or '-'} | " + " | ".join(cells) + " |")
    for pub in mm.protocol.published if published else []:
        figs = [pub.figures.get((g, level), {}) for g in mm.groups]
        if not any(any(k.key in f for k in metrics) for f in figs):
            continue
        cells = [_fmt((k, f.get(k.key)) for k in metrics) for f in figs]
        lines.append(f"| *{pub.name}, published* | - | " + " | ".join(cells) + " |")
    return lines


def narrow_table(mm: Means) -> list[str]:
    """One group and level: the metrics as columns (the default protocol)."""
    ms = [k for k in mm.protocol.headline + PERCEPTUAL if mm.has(k.key)]
    head = "| method | NFE | images | " + " | ".join(k.label for k in ms) + " | s / image |"
    lines = [head, "|---|---|---|" + "---|" * len(ms) + "---|"]
    for m in sorted(mm.records, key=method_order):
        cells = [format(m[k.key], k.fmt) if k.key in m else "-" for k in ms]
        lines.append(
            f"| {mm.label(m)} | {m['nfe'] or '-'} | {m['images']} | "
            + " | ".join(cells)
            + f" | {m['seconds_per_image']:.3f} |"
        )
    return lines


def gains(mm: Means) -> list[str]:
    """Each estimate's headline PSNR against the input row, and the best mean and sample."""
    key = mm.protocol.headline[0].key
    lines = ["", "Against the input (PSNR, dB):", ""]
    base = mm.protocol.baseline_label
    for label in mm.labels:
        if label == base:
            continue
        parts = []
        for lv in mm.levels:
            for g in mm.groups:
                a, b = mm.get(label, g, lv), mm.get(base, g, lv)
                if a and b and key in a and key in b:
                    where = f"{g} {lv}".strip() or "all"
                    parts.append(f"{where} {a[key] - b[key]:+.2f}")
        if parts:
            lines.append(f"- {label}: " + ", ".join(parts))
    lines.append("")
    if mm.protocol.wide:
        return lines
    for kind, what in (
        ("mean", "Posterior mean"),
        ("perceptual", "Perceptual estimate"),
        ("sample", "Best single sample"),
    ):
        rows = [m for m in mm.records if m["estimate"] == kind and key in m]
        if rows:
            best = max(rows, key=lambda m: m[key])
            lines.append(f"- {what}: **{best['method']}, {best[key]:.2f} dB**.")
    return lines


def sample_gaps(mm: Means) -> list[str]:
    """How far below the one-call mean each sample method sits (PSNR), per group and level."""
    key = mm.protocol.headline[0].key
    samples = [lb for lb in mm.labels if lb.startswith("sample")]
    if "mean" not in mm.labels or not samples:
        return []
    lines = [
        "",
        f"Sample PSNR gap to the posterior mean (dB; an exact posterior sample sits "
        f"{POSTERIOR_GAP_DB:.2f} dB below the exact mean, as its error is twice the mean's):",
        "",
    ]
    for label in samples:
        parts = []
        for lv in mm.levels:
            for g in mm.groups:
                a, b = mm.get("mean", g, lv), mm.get(label, g, lv)
                if a and b and key in a and key in b:
                    parts.append(f"{f'{g} {lv}'.strip() or 'all'} {a[key] - b[key]:.2f}")
        lines.append(f"- {label}: " + ", ".join(parts))
    return lines


def _level_tables(mm: Means, title: str, metrics: tuple[Metric, ...], published: bool) -> list[str]:
    """``title`` over one wide table of ``metrics`` per level."""
    lines = ["", title, ""]
    for lv in mm.levels:
        if lv:
            lines += ["", f"{lv}:", ""]
        lines += wide_table(mm, lv, metrics, published=published)
    return lines


def perceptual_tables(mm: Means) -> list[str]:
    ms = tuple(k for k in PERCEPTUAL if mm.has(k.key))
    if not ms or not mm.protocol.wide:
        return []
    pair = (mm.protocol.headline[0], *ms)
    title = (
        "Perceptual scores ("
        + " / ".join(k.label for k in pair)
        + "; LPIPS and DISTS: lower is better):"
    )
    return _level_tables(mm, title, pair, published=True)


def set_tables(mm: Means) -> list[str]:
    """KID and FID per set (crops of every image)."""
    if not mm.has("kid") or not mm.protocol.wide:
        return []
    crops = {str(m["group"]): m.get("kid_crops") for m in mm.records if "kid_crops" in m}
    title = (
        "Set-level scores on crops (KID x 1000 / FID; lower is better; crops per set: "
        + ", ".join(f"{g} {int(n)}" for g, n in crops.items() if n)
        + "):"
    )
    return _level_tables(mm, title, SET_LEVEL, published=False)


def summary_markdown(report: Report, protocol: Protocol) -> str:
    mm = Means(report, protocol)
    lines = [f"# {protocol.title}", ""]
    if protocol.description:
        lines += [protocol.description, ""]
    if protocol.wide:
        for lv in mm.levels:
            if lv:
                lines += [f"## {lv}", ""]
            lines += [*wide_table(mm, lv, protocol.headline, published=True), ""]
    else:
        lines += narrow_table(mm)
    lines += gains(mm) + sample_gaps(mm) + perceptual_tables(mm) + set_tables(mm)

    def table(metric: Metric, title: str, extra: tuple = ()) -> list[str]:
        if not mm.has(metric.key):
            return []
        out = [
            "",
            title,
            "",
            "| method | " + " | ".join(mm.groups) + " |",
            "|---|" + "---|" * len(mm.groups),
        ]
        for label in mm.labels:
            cells = []
            for g in mm.groups:
                p = mm.get(label, g, mm.levels[0])
                text = "-" if not p or metric.key not in p else format(p[metric.key], metric.fmt)
                if p and extra:
                    text += "; " + ", ".join(f"{n} {p[k]:.2f}" for k, n in extra if k in p)
                cells.append(text)
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        return out

    lines += protocol.sections(table)
    lines += _closing(report, protocol, mm)
    return "\n".join(lines)


def _closing(report: Report, protocol: Protocol, mm: Means) -> list[str]:
    caption = grid_caption(report, protocol.has_baseline())
    plots = [
        p
        for p in (protocol.plot, "quality_vs_steps.png", "pd_plane.png", "kid_lpips.png")
        if p and (report.out_dir / p).is_file()
    ]  # type: ignore[operator]
    lines = [
        "",
        "The mean is the posterior mean, the minimum-MSE estimate: it scores the highest PSNR "
        "and looks smoother. A sample is one plausible target, sharp and varied: the perceptual "
        "choice, whose PSNR is lower by nature (an exact posterior sample has twice the mean's "
        "squared error, 3.01 dB lower PSNR)."
        + (
            " The perceptual estimate is one call of a generator fine-tuned for realism (a "
            "perceptual stage): the sharpest per call, not a posterior sample (no uncertainty)."
            if "perceptual" in mm.labels
            else ""
        ),
        "",
        *protocol.notes,
        "",
        f"Grids ({caption}): `grids/`. Per-image figures: `metrics.csv`; means: `summary.csv`; "
        f"plots: {', '.join(f'`{p}`' for p in plots) or 'none'}.",
        "",
        "Seconds per image time the network's work; each method's first call at each input size "
        "(compile, warm-up) is left out of the mean, unless it is the only one.",
        "",
    ]
    lines += [f"- {n}" for n in report.notes]
    lines += ["", NOT_OFFLINE, ""]
    return lines


def write_report(report: Report, protocol: Protocol) -> None:
    """CSVs, plots and ``report.md`` into ``report.out_dir``."""
    out = report.out_dir
    assert out is not None
    means = write_csvs(report)
    mm = Means(report, protocol)
    if protocol.plot:
        plot_headline(mm, out / protocol.plot)
    if any(m["estimate"] == "sample" for m in means):
        plot_quality_vs_steps(mm, out / "quality_vs_steps.png")
    if mm.has("lpips"):
        plot_pd_plane(mm, out / "pd_plane.png")
    if mm.has("lpips") and mm.has("kid"):
        plot_kid_lpips(mm, out / "kid_lpips.png")
    (out / "report.md").write_text(summary_markdown(report, protocol))
