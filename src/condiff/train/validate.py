"""The periodic validation: the EMA model on held-out crops, scored and shown as a grid."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from condiff.config import RunConfig
from condiff.data import ValCrops
from condiff.data.datasets import collate
from condiff.data.io import from_model
from condiff.diffusion import NoiseSchedule, sample
from condiff.diffusion.objectives import decode_target
from condiff.diffusion.samplers import estimate_plan
from condiff.evaluate.metrics import psnr, ssim
from condiff.nn.precision import autocast_ctx


@torch.no_grad()
def validate(
    cfg: RunConfig,
    model: nn.Module,
    schedule: NoiseSchedule,
    val_set: ValCrops,
    device: torch.device,
    precision: str,
    estimates: tuple[str, ...] = ("mean", "sample"),
) -> tuple[dict[str, float], Tensor]:
    """The held-out crops with the EMA model: PSNR/SSIM of each estimate and of the task's
    baseline. ``mean`` and ``perceptual`` are one network call (the perceptual stage's generator
    is the network at the top timestep); ``sample`` runs ``train.val_steps`` steps."""
    conds, targets = collate([val_set[i] for i in range(len(val_set))])
    conds, targets = conds.to(device), targets.to(device)
    d, sc = cfg.diffusion, cfg.sample
    model.eval()
    outs = {}
    for est in estimates:
        one_call = "mean" if est == "perceptual" else est
        sampler, steps, spacing = estimate_plan(
            one_call, sc.sampler, cfg.train.val_steps, sc.spacing, 1
        )
        with autocast_ctx(precision, device):
            z = sample(
                model,
                conds,
                schedule,
                target_channels=targets.shape[1],
                sampler=sampler,
                steps=steps,
                generator=torch.Generator(device).manual_seed(0),
                objective=d.objective,
                spacing=spacing,
                clip=sc.clip,
                clip_value=d.target_scale,
            )
        outs[est] = decode_target(z, conds, residual=d.residual, scale=d.target_scale).clamp(-1, 1)
    metrics = _scores(val_set, conds, targets, outs)
    return metrics, image_grid(conds[:4], *(o[:4] for o in outs.values()), targets[:4])


def _scores(val_set: ValCrops, conds: Tensor, targets: Tensor, outs: dict) -> dict[str, float]:
    """Mean PSNR/SSIM per estimate (``mean_``, ``sample_``) and of the baseline."""
    task, tc = val_set.source.task, targets.shape[1]
    m: dict[str, list[float]] = {}
    for i in range(len(targets)):
        tgt = from_model(targets[i])
        preds = {f"{k}_": from_model(v[i]) for k, v in outs.items()}
        if task is not None or conds.shape[1] >= tc:
            base = task.baseline(conds[i].cpu(), tc) if task is not None else conds[i, :tc].cpu()
            preds["baseline_"] = from_model(base)
        for prefix, pred in preds.items():
            m.setdefault(prefix + "psnr", []).append(psnr(pred, tgt))
            m.setdefault(prefix + "ssim", []).append(ssim(pred, tgt))
    return {k: float(sum(v) / len(v)) for k, v in m.items()}


def image_grid(cond: Tensor, *columns: Tensor) -> Tensor:
    """Rows of condition | estimates ... | target (the last column), (3, H*rows, W*cols) in
    [0, 1] for TensorBoard."""
    c = columns[-1].shape[1]

    def rgb(x: Tensor) -> Tensor:
        x = x[:, :c] if x.shape[1] >= c else x[:, :1].expand(-1, c, -1, -1)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
        return ((x.float().clamp(-1, 1) + 1) / 2).cpu()

    rows = [
        torch.cat([rgb(cond)[i], *(rgb(col)[i] for col in columns)], dim=2)
        for i in range(len(columns[-1]))
    ]
    return torch.cat(rows, dim=1)
