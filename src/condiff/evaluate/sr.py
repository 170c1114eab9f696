"""The field's super-resolution protocol (``condiff evaluate --protocol sr``).

As the published tables (SRCNN, VDSR, EDSR) score it:

- the high-resolution image is mod-cropped to the factor;
- the input is its bicubic downscale rounded to 8 bits (what a user holds), bicubic-upscaled
  back for the network (the task's own degradation);
- estimates are rounded to 8 bits (as a saved PNG), then scored on Y of ITU-R BT.601 YCbCr
  (16-235 on the 0-255 scale) with ``factor`` pixels of border cropped: PSNR with peak 255, and
  SSIM as Wang et al. 2004 define it (11x11 Gaussian window, sigma 1.5, K = 0.01 / 0.03, over
  the valid windows), the MATLAB ``ssim`` the tables used.

A gray model reads images as luma L = 0.299 R + 0.587 G + 0.114 B, and Y = 16 + 219 L exactly
(for L in [0, 1]), so its Y score is the field's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

from condiff.data.io import ImageError, list_images, read_image, to_model
from condiff.data.tasks import SuperResolution, resize_bicubic
from condiff.evaluate.report import EvalItem, Report, grid_caption, method_order, write_csvs

# Published 4x figures (Y, border = 4), PSNR / SSIM, as the papers print them: bicubic, SRCNN
# and VDSR from VDSR (Kim et al., CVPR 2016, table 3), EDSR from Lim et al., CVPRW 2017, table 3.
PUBLISHED: dict[int, dict[str, dict[str, tuple[float, float]]]] = {
    4: {
        "bicubic": {
            "Set5": (28.42, 0.8104),
            "Set14": (26.00, 0.7027),
            "BSD100": (25.96, 0.6675),
            "Urban100": (23.14, 0.6577),
        },
        "SRCNN (Dong et al. 2014)": {
            "Set5": (30.48, 0.8628),
            "Set14": (27.50, 0.7513),
            "BSD100": (26.90, 0.7101),
            "Urban100": (24.52, 0.7221),
        },
        "VDSR (Kim et al. 2016)": {
            "Set5": (31.35, 0.8838),
            "Set14": (28.01, 0.7674),
            "BSD100": (27.29, 0.7251),
            "Urban100": (25.18, 0.7524),
        },
        "EDSR (Lim et al. 2017)": {
            "Set5": (32.46, 0.8968),
            "Set14": (28.80, 0.7876),
            "BSD100": (27.71, 0.7420),
            "Urban100": (26.64, 0.8033),
        },
    }
}


def ycbcr(x: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> (H, W, 3) Y, Cb, Cr of ITU-R BT.601 on the 0-255 scale (float64).

    Gray (C = 1) is R = G = B: Y = 16 + 219 x, Cb = Cr = 128.
    """
    x = x.astype(np.float64)
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    m = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
    return x @ m.T + np.array([16.0, 128.0, 128.0])


def rgb_to_y(x: np.ndarray) -> np.ndarray:
    """(H, W, C) in [0, 1] -> (H, W) Y on the 0-255 scale (16-235)."""
    return ycbcr(x)[:, :, 0]


def shave(x: np.ndarray, border: int) -> np.ndarray:
    return x[border:-border, border:-border] if border > 0 else x


def psnr_255(pred: np.ndarray, target: np.ndarray) -> float:
    mse = float(np.mean((pred.astype(np.float64) - target.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def ssim_255(pred: np.ndarray, target: np.ndarray) -> float:
    """SSIM of two (H, W) images on the 0-255 scale, Wang et al. 2004's settings."""
    return float(
        structural_similarity(
            target,
            pred,
            data_range=255.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def sr_score(factor: int):
    """A scorer for :func:`condiff.evaluate.report.evaluate`: Y PSNR/SSIM with ``factor`` pixels
    of border cropped; for colour, RGB PSNR and the RMS error of Cb and Cr; and the consistency
    of every estimate with its input (PSNR of the estimate, downscaled as the task does, against
    the low-resolution image, on [0, 1])."""

    def score(item: EvalItem, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        p, t = shave(ycbcr(pred), factor), shave(ycbcr(target), factor)
        out = {"psnr_y": psnr_255(p[..., 0], t[..., 0]), "ssim_y": ssim_255(p[..., 0], t[..., 0])}
        if target.shape[2] == 3:
            out["psnr_rgb"] = psnr_255(shave(pred, factor) * 255, shave(target, factor) * 255)
            out["rmse_cb"] = float(np.sqrt(np.mean((p[..., 1] - t[..., 1]) ** 2)))
            out["rmse_cr"] = float(np.sqrt(np.mean((p[..., 2] - t[..., 2]) ** 2)))
        if item.low is not None:
            est = to_model(pred.astype(np.float32))
            low = resize_bicubic(est, tuple(item.low.shape[-2:])).clamp(-1, 1)
            out["lr_consistency"] = psnr_255(
                (low.numpy() + 1) * 127.5, (item.low.float().numpy() + 1) * 127.5
            )
        return out

    return score


def _task_cfg(factor: int):
    from condiff.config import TaskConfig

    return TaskConfig(name="super_resolution", factor=factor)


def sr_items(
    folders: list[str | Path],
    factor: int,
    color: str,
    limit: int | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[EvalItem]:
    """Each folder a test set (named by the folder): every image mod-cropped to ``factor``,
    downscaled and rounded to 8 bits, upscaled back as the condition. An unreadable file raises
    :class:`ImageError`, or, given ``skipped``, is listed there and left out."""
    task = SuperResolution(_task_cfg(factor))
    items = []
    for folder in folders:
        group = Path(folder).name
        paths = list_images(folder)
        for path in paths[:limit] if limit else paths:
            try:
                hr, _ = read_image(path, color)
            except ImageError as e:
                if skipped is None:
                    raise
                skipped.append((path, str(e)))
                continue
            h, w = hr.shape[0] - hr.shape[0] % factor, hr.shape[1] - hr.shape[1] % factor
            target = to_model(hr[:h, :w])
            low = task.downscale(target)
            items.append(EvalItem(path.stem, task.upscale(low), target, group=group, low=low))
    return items


def bicubic_baseline(cond: torch.Tensor) -> torch.Tensor:
    """The SR baseline is the condition itself: the 8-bit input, bicubic-upscaled."""
    return cond


# --- report ------------------------------------------------------------------------------------


def _groups(means: list[dict]) -> list[str]:
    out: list[str] = []
    for m in means:
        if m["group"] not in out:
            out.append(str(m["group"]))
    return out


def _label(m: dict) -> str:
    return "bicubic (ours)" if m["estimate"] == "baseline" else str(m["method"])


def sr_markdown(means: list[dict], factor: int, caption: str, colour: bool) -> str:
    sets = _groups(means)
    methods: dict[str, dict[str, dict]] = {}
    for m in sorted(means, key=method_order):
        methods.setdefault(_label(m), {})[str(m["group"])] = m
    published = PUBLISHED.get(factor, {})
    head = "| method | NFE | " + " | ".join(sets) + " |"
    rule = "|---|---|" + "---|" * len(sets)
    lines = [
        f"# condiff evaluation: {factor}x super-resolution, the field's protocol",
        "",
        f"Y of BT.601 YCbCr (16-235), {factor} pixels of border cropped, estimates rounded to 8 "
        f"bits; input: the bicubic downscale rounded to 8 bits. PSNR (dB) / SSIM.",
        "",
        head,
        rule,
    ]
    for label, per in methods.items():
        first = next(iter(per.values()))
        cells = [
            f"{per[s]['psnr_y']:.2f} / {per[s]['ssim_y']:.4f}" if s in per else "-" for s in sets
        ]
        lines.append(f"| {label} | {first['nfe'] or '-'} | " + " | ".join(cells) + " |")
    for name, figs in published.items():
        cells = [f"{figs[s][0]:.2f} / {figs[s][1]:.4f}" if s in figs else "-" for s in sets]
        lines.append(f"| *{name}, published* | - | " + " | ".join(cells) + " |")
    base = methods.get("bicubic (ours)", {})
    lines += ["", "Against bicubic (PSNR, dB):", ""]
    for label, per in methods.items():
        if label == "bicubic (ours)":
            continue
        gains = [
            f"{s} {per[s]['psnr_y'] - base[s]['psnr_y']:+.2f}"
            for s in sets
            if s in per and s in base
        ]
        lines.append(f"- {label}: " + ", ".join(gains))
    lines += [
        "",
        "Consistency with the input (PSNR of the estimate downscaled as the task does, against "
        "the 8-bit low-resolution image; higher = more faithful to what the user gave):",
        "",
        "| method | " + " | ".join(sets) + " |",
        "|---|" + "---|" * len(sets),
    ]
    for label, per in methods.items():
        cells = [f"{per[s]['lr_consistency']:.2f}" if s in per else "-" for s in sets]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if colour:
        lines += [
            "",
            "Colour (RGB PSNR, dB; RMS error of Cb and Cr on the 0-255 scale):",
            "",
            "| method | " + " | ".join(sets) + " |",
            "|---|" + "---|" * len(sets),
        ]
        for label, per in methods.items():
            cells = [
                f"{per[s]['psnr_rgb']:.2f}; Cb {per[s]['rmse_cb']:.2f}, Cr {per[s]['rmse_cr']:.2f}"
                if s in per
                else "-"
                for s in sets
            ]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "The mean is the posterior mean, the minimum-MSE estimate (highest PSNR, smoother); a "
        "sample is one plausible image, sharp, the perceptual choice, and an exact posterior "
        "sample has twice the mean's squared error (3 dB lower PSNR) by nature.",
        "",
        "Published rows: bicubic, SRCNN and VDSR as printed in VDSR (Kim et al. 2016, table 3), "
        "EDSR in Lim et al. 2017 (table 3); trained on other data (91 images + BSD200, DIV2K).",
        "",
        f"Grids ({caption}): `grids/SET/`. Per-image figures: `metrics.csv`; means: "
        "`summary.csv`; plot: `sr_psnr.png`.",
        "",
    ]
    return "\n".join(lines)


def plot_sr(means: list[dict], factor: int, path: Path) -> None:
    """Y PSNR per test set: our methods as bars, the published rows as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = _groups(means)
    labels: list[str] = []
    for m in sorted(means, key=method_order):
        if _label(m) not in labels:
            labels.append(_label(m))
    fig, ax = plt.subplots(figsize=(5.0 + 2.2 * len(sets), 4.2))
    width = 0.8 / max(1, len(labels))
    by = {(_label(m), m["group"]): m["psnr_y"] for m in means}
    for i, label in enumerate(labels):
        xs = [k + (i - (len(labels) - 1) / 2) * width for k in range(len(sets))]
        ys = [by.get((label, s), np.nan) for s in sets]
        ax.bar(xs, ys, width=width * 0.95, label=label, color=f"C{i}")
    styles = [":", "--", "-.", "-"]
    for j, (name, figs) in enumerate(PUBLISHED.get(factor, {}).items()):
        for k, s in enumerate(sets):
            if s in figs:
                ax.hlines(
                    figs[s][0],
                    k - 0.45,
                    k + 0.45,
                    colors="0.25",
                    linestyles=styles[j % len(styles)],
                    label=f"{name}, published" if k == 0 else None,
                )
    lo = np.nanmin([v for v in by.values()] or [20.0])
    ax.set_ylim(lo - 2, None)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylabel(f"PSNR on Y, {factor}x (dB)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{factor}x super-resolution: condiff vs bicubic and the published rows")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_sr_report(report: Report, factor: int) -> None:
    out = report.out_dir
    assert out is not None
    means = write_csvs(report)
    colour = any("psnr_rgb" in m for m in means)
    plot_sr(means, factor, out / "sr_psnr.png")
    (out / "report.md").write_text(
        sr_markdown(means, factor, grid_caption(report, has_baseline=True), colour)
    )
