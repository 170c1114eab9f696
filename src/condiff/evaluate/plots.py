"""Report plots: the headline metric per test set, quality vs sampler steps, and the
perception-distortion plane (PSNR against LPIPS; Blau & Michaeli 2018)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from condiff.evaluate.means import Means


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _columns(mm: Means) -> list[tuple[str, str]]:
    return [(g, lv) for lv in mm.levels for g in mm.groups]


def plot_headline(mm: Means, path: Path) -> None:
    """The headline PSNR per (set, level): our methods as bars, the published rows as ticks."""
    plt = _plt()
    key = mm.protocol.headline[0].key
    cols = _columns(mm)
    labels = [lb for lb in mm.labels if any(mm.get(lb, g, lv) for g, lv in cols)]
    fig, ax = plt.subplots(figsize=(5.0 + 1.6 * len(cols), 4.2))
    width = 0.8 / max(1, len(labels))
    values = []
    for i, label in enumerate(labels):
        xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(cols))]
        ys = [(mm.get(label, g, lv) or {}).get(key, np.nan) for g, lv in cols]
        values += [y for y in ys if y == y]
        ax.bar(xs, ys, width=width * 0.95, label=label, color=f"C{i}")
    styles = [":", "--", "-.", "-"]
    shown = 0
    for pub in mm.protocol.published:
        hits = [
            (k, pub.figures[c][key]) for k, c in enumerate(cols) if key in pub.figures.get(c, {})
        ]
        for j, (k, v) in enumerate(hits):
            ax.hlines(
                v,
                k - 0.45,
                k + 0.45,
                colors="0.25",
                linestyles=styles[shown % len(styles)],
                label=f"{pub.name}, published" if j == 0 else None,
            )
        shown += bool(hits)
    ax.set_ylim(min(values or [20.0]) - 2, None)
    ax.set_xticks(range(len(cols)), [f"{g}\n{lv}".strip() for g, lv in cols])
    ax.set_ylabel(f"{mm.protocol.headline[0].label} (dB)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{mm.protocol.title.removeprefix('condiff evaluation: ')}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_quality_vs_steps(mm: Means, path: Path) -> None:
    """PSNR and SSIM of samples against steps (first set and level), mean and input as lines."""
    plt = _plt()
    g, lv = mm.groups[0], mm.levels[0]
    recs = [m for m in mm.records if m["group"] == g and m["level"] == lv]
    psnr_key, ssim_key = (k.key for k in mm.protocol.headline[:2])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    base = next((m for m in recs if m["estimate"] == "baseline"), None)
    mean = next((m for m in recs if m["method"] == "mean"), None)
    samples = [m for m in recs if m["estimate"] == "sample"]
    for key, ax in zip((psnr_key, ssim_key), axes, strict=True):
        for sampler in sorted({m["sampler"] for m in samples}):
            pts = sorted((m["steps"], m[key]) for m in samples if m["sampler"] == sampler)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{sampler} sample")
        if mean is not None:
            ax.axhline(mean[key], color="C3", linestyle="-", label="mean (1 network call)")
        if base is not None:
            ax.axhline(base[key], color="gray", linestyle="--", label="input (baseline)")
        ticks = sorted({m["steps"] for m in samples})
        if ticks:
            ax.set_xscale("log")
            ax.set_xticks(ticks, [str(s) for s in ticks])
            ax.minorticks_off()
        ax.set_xlabel("sampler steps")
        ax.set_ylabel(key.upper() + (" (dB)" if "psnr" in key else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"held-out quality {g} {lv}: posterior mean, samples vs steps, input".strip())
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pd_plane(mm: Means, path: Path) -> None:
    """PSNR (x) against LPIPS (y, lower is better) per set: one point per method (estimate,
    sampler, steps, eta), the input, and the published rows that give both."""
    plt = _plt()
    key = mm.protocol.headline[0].key
    cols = [
        (g, lv)
        for g, lv in _columns(mm)
        if any("lpips" in (mm.get(lb, g, lv) or {}) for lb in mm.labels)
    ][:6]
    fig, axes = plt.subplots(1, len(cols), figsize=(5.2 * len(cols), 4.6), squeeze=False)
    for ax, (g, lv) in zip(axes[0], cols, strict=True):
        for i, label in enumerate(mm.labels):
            m = mm.get(label, g, lv)
            if m and "lpips" in m and key in m:
                marker = {"baseline": "s", "perceptual": "D"}.get(
                    str(m["estimate"]), "*" if label == "mean" else "o"
                )
                ax.scatter(m[key], m["lpips"], color=f"C{i % 10}", marker=marker, s=60)
                ax.annotate(
                    label,
                    (m[key], m["lpips"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        for pub in mm.protocol.published:
            f = pub.figures.get((g, lv), {})
            if key in f and "lpips" in f:
                ax.scatter(f[key], f["lpips"], color="0.3", marker="x", s=40)
                ax.annotate(
                    pub.name.split(" (")[0],
                    (f[key], f["lpips"]),
                    fontsize=6,
                    color="0.3",
                    xytext=(3, -8),
                    textcoords="offset points",
                )
        ax.set_xlabel(f"{mm.protocol.headline[0].label} (dB), higher is better")
        ax.set_ylabel("LPIPS (alex), lower is better")
        ax.set_title(f"{g} {lv}".strip())
        ax.grid(True, alpha=0.3)
    fig.suptitle("perception-distortion plane: better is down and to the right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_kid_lpips(mm: Means, path: Path) -> None:
    """KID (Inception, on crops) against LPIPS (AlexNet) per set, one point per method: two
    networks that share nothing, so a method that games one (a VGG-trained loss) shows."""
    plt = _plt()
    cols = [
        (g, lv)
        for g, lv in _columns(mm)
        if any({"kid", "lpips"} <= set(mm.get(lb, g, lv) or {}) for lb in mm.labels)
    ][:6]
    fig, axes = plt.subplots(1, len(cols), figsize=(5.2 * len(cols), 4.6), squeeze=False)
    for ax, (g, lv) in zip(axes[0], cols, strict=True):
        for i, label in enumerate(mm.labels):
            m = mm.get(label, g, lv)
            if m and "kid" in m and "lpips" in m:
                ax.scatter(m["lpips"], 1000 * m["kid"], color=f"C{i % 10}", s=60)
                ax.annotate(
                    label, (m["lpips"], 1000 * m["kid"]), fontsize=6, xytext=(3, 3),
                    textcoords="offset points",
                )  # fmt: skip
        crops = next((mm.get(lb, g, lv) or {}).get("kid_crops") for lb in mm.labels)
        ax.set_xlabel("LPIPS (alex), lower is better")
        ax.set_ylabel("KID x 1000 (Inception, crops), lower is better")
        ax.set_title(f"{g} {lv}".strip() + (f" ({int(crops)} crops)" if crops else ""))
        ax.grid(True, alpha=0.3)
    fig.suptitle("two perceptual scores from unrelated networks: better is down and to the left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
