"""Evaluation: methods (baseline, mean, samples), protocols (default, sr, denoise, jpeg),
metrics (PSNR/SSIM/PSNR-B, LPIPS/DISTS offline), report folders."""

from condiff.evaluate.metrics import all_metrics, mae, psnr, ssim
from condiff.evaluate.report import EvalItem, Report, evaluate

__all__ = ["EvalItem", "Report", "all_metrics", "evaluate", "mae", "psnr", "ssim"]
