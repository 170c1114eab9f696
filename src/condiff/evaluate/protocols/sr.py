"""The field's super-resolution protocol (``condiff evaluate --protocol sr``).

As the published tables (SRCNN, VDSR, EDSR) score it:

- the high-resolution image is mod-cropped to the factor;
- the input is its bicubic downscale rounded to 8 bits (what a user holds), bicubic-upscaled
  back for the network (the task's own degradation);
- estimates are rounded to 8 bits (as a saved PNG), then scored on Y of ITU-R BT.601 YCbCr
  (16-235 on the 0-255 scale) with ``factor`` pixels of border cropped: PSNR with peak 255, and
  SSIM as Wang et al. 2004 define it (the MATLAB ``ssim`` the tables used).

A gray model reads images as luma L = 0.299 R + 0.587 G + 0.114 B, and Y = 16 + 219 L exactly
(for L in [0, 1]), so its Y score is the field's. LPIPS (when set up) is computed as the
perceptual-SR papers do: AlexNet v0.1 on RGB in [-1, 1] (gray replicated), whole image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from condiff.config import TaskConfig
from condiff.data.io import read_image, to_model
from condiff.data.tasks import SuperResolution, resize_bicubic
from condiff.evaluate.metrics import psnr_255, shave, ssim_255, ycbcr
from condiff.evaluate.protocols.base import Metric, Protocol, Published, read_sets
from condiff.evaluate.report import EvalItem

# Published 4x figures (Y, border = 4), PSNR / SSIM, as the papers print them: bicubic, SRCNN
# and VDSR from VDSR (Kim et al., CVPR 2016, table 3), EDSR from Lim et al., CVPRW 2017, table 3.
# LPIPS (alex v0.1, RGB, whole image) with Y PSNR: the SPSR repository's table (one
# evaluation), DiffIR and SRDiff from the DiffIR repository's table.
_SETS = ("Set5", "Set14", "BSD100", "Urban100")


def _rows(name: str, psnr: tuple, ssim: tuple | None = None, lpips: tuple | None = None):
    figs = {}
    for i, s in enumerate(_SETS):
        m = {k: v[i] for k, v in (("psnr_y", psnr), ("ssim_y", ssim), ("lpips", lpips)) if v}
        m = {k: v for k, v in m.items() if v is not None}
        if m:
            figs[(s, "")] = m
    return Published(name, figs)


PUBLISHED_4X = [
    _rows("bicubic", (28.42, 26.00, 25.96, 23.14), (0.8104, 0.7027, 0.6675, 0.6577)),
    _rows(
        "SRCNN (Dong et al. 2014)", (30.48, 27.50, 26.90, 24.52), (0.8628, 0.7513, 0.7101, 0.7221)
    ),
    _rows("VDSR (Kim et al. 2016)", (31.35, 28.01, 27.29, 25.18), (0.8838, 0.7674, 0.7251, 0.7524)),
    _rows("EDSR (Lim et al. 2017)", (32.46, 28.80, 27.71, 26.64), (0.8968, 0.7876, 0.7420, 0.8033)),
    _rows(
        "SRGAN (Ledig et al. 2017)",
        (29.17, 26.17, 25.46, 24.40),
        lpips=(0.088, 0.166, 0.198, 0.155),
    ),
    _rows(
        "ESRGAN (Wang et al. 2018)",
        (30.45, 26.28, 25.32, 24.36),
        lpips=(0.075, 0.133, 0.161, 0.123),
    ),
    _rows(
        "SPSR (Ma et al. 2020)", (30.40, 26.64, 25.51, 24.80), lpips=(0.064, 0.132, 0.161, 0.118)
    ),
    _rows("SRDiff (Li et al. 2022)", (None, 27.14, None, 25.12), lpips=(None, 0.145, None, 0.138)),
    _rows("DiffIR (Xia et al. 2023)", (None, 27.73, None, 26.05), lpips=(None, 0.112, None, 0.101)),
]


@dataclass
class SRProtocol(Protocol):
    factor: int = 4
    name: str = "sr"
    baseline_label: str = "bicubic (ours)"
    plot: str = "sr_psnr.png"
    headline: tuple[Metric, ...] = (Metric("psnr_y", "PSNR"), Metric("ssim_y", "SSIM", ".4f"))
    published: list[Published] = field(default_factory=list)

    def __post_init__(self) -> None:
        f = self.factor
        self.title = f"condiff evaluation: {f}x super-resolution, the field's protocol"
        self.description = (
            f"Y of BT.601 YCbCr (16-235), {f} pixels of border cropped, estimates rounded to 8 "
            "bits; input: the bicubic downscale rounded to 8 bits. PSNR (dB) / SSIM."
        )
        self.published = PUBLISHED_4X if f == 4 else []
        self.notes = [
            "Published rows: bicubic, SRCNN and VDSR as printed in VDSR (Kim et al. 2016, "
            "table 3), EDSR in Lim et al. 2017 (table 3), trained on other data (91 images + "
            "BSD200, DIV2K); the perceptual rows (Y PSNR / LPIPS) from the SPSR and DiffIR "
            "repositories' tables, trained on DIV2K (+ Flickr2K).",
        ]
        self.task = SuperResolution(TaskConfig(name="super_resolution", factor=f))

    def check(self, pipe) -> None:
        task = pipe.cfg.data.task
        if pipe.cfg.data.kind == "task" and task.name != "super_resolution":
            raise ValueError(
                f"--protocol sr needs a super-resolution model; this run was trained for "
                f"{task.name} (use --protocol {PROTOCOL_OF.get(task.name, 'default')})"
            )

    def items(self, folders, *, color, limit=None, skipped=None) -> list[EvalItem]:
        """Each folder a test set (named by the folder): every image mod-cropped to the
        factor, downscaled and rounded to 8 bits, upscaled back as the condition."""
        f = self.factor
        items = []
        for group, path, hr in read_sets(
            folders, lambda p: read_image(p, color)[0], limit, skipped
        ):
            h, w = hr.shape[0] - hr.shape[0] % f, hr.shape[1] - hr.shape[1] % f
            target = to_model(hr[:h, :w])
            low = self.task.downscale(target)
            items.append(EvalItem(path.stem, self.task.upscale(low), target, group, low=low))
        return items

    def score(self, item, pred, target) -> dict[str, float]:
        """Y PSNR/SSIM, border cropped; for colour, RGB PSNR and the RMS error of Cb and Cr;
        and the estimate's consistency with its input (PSNR of the estimate, downscaled as the
        task does, against the low-resolution image)."""
        f = self.factor
        p, t = shave(ycbcr(pred), f), shave(ycbcr(target), f)
        out = {"psnr_y": psnr_255(p[..., 0], t[..., 0]), "ssim_y": ssim_255(p[..., 0], t[..., 0])}
        if target.shape[2] == 3:
            out["psnr_rgb"] = psnr_255(shave(pred, f) * 255, shave(target, f) * 255)
            out["rmse_cb"] = float(np.sqrt(np.mean((p[..., 1] - t[..., 1]) ** 2)))
            out["rmse_cr"] = float(np.sqrt(np.mean((p[..., 2] - t[..., 2]) ** 2)))
        if item.low is not None:
            est = to_model(pred.astype(np.float32))
            low = resize_bicubic(est, tuple(item.low.shape[-2:])).clamp(-1, 1)
            out["lr_consistency"] = psnr_255(
                (low.numpy() + 1) * 127.5, (item.low.float().numpy() + 1) * 127.5
            )
        return out

    def sections(self, table) -> list[str]:
        lines = table(
            Metric("lr_consistency", "input consistency"),
            "Consistency with the input (PSNR of the estimate downscaled as the task does, "
            "against the 8-bit low-resolution image; higher = more faithful to what the user "
            "gave):",
        )
        lines += table(
            Metric("psnr_rgb", "RGB PSNR"),
            "Colour (RGB PSNR, dB; RMS error of Cb and Cr on the 0-255 scale):",
            extra=(("rmse_cb", "Cb"), ("rmse_cr", "Cr")),
        )
        return lines


PROTOCOL_OF = {"super_resolution": "sr", "denoising": "denoise", "jpeg": "jpeg"}
