"""The set-up phase: model, EMA, optimizer, LR schedule and data loader from a RunConfig; and
the resume / ``train.init_from`` phase that fills them from a checkpoint."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from condiff import checkpoint as ckpt
from condiff.config import ModelConfig, RunConfig, from_dict
from condiff.data import GlobalSampleSampler, ImageSource, TrainCrops
from condiff.data.datasets import collate
from condiff.nn import ConditionalUNet
from condiff.train.budget import kept_plan
from condiff.train.ema import EMA
from condiff.train.stop import loader_worker_init

ARCH_FREE = ("preset", "dropout_rate")  # model fields that change no weight shape


def build_model(cfg: RunConfig) -> ConditionalUNet:
    return ConditionalUNet(**cfg.model.network_kwargs())


def lr_lambda(cfg: RunConfig) -> Callable[[int], float]:
    """The LR factor at a step: linear warm-up, then constant or cosine to zero."""
    tc = cfg.train

    def f(step: int) -> float:
        if tc.warmup_steps and step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        if tc.lr_schedule == "cosine":
            span = max(1, tc.steps - tc.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - tc.warmup_steps) / span)))
        return 1.0

    return f


def micro_batch(cfg: RunConfig, world: int) -> int:
    """Samples per process per micro-step; the global batch must split evenly."""
    tc = cfg.train
    micro, rem = divmod(tc.batch_size, world * tc.grad_accum)
    if rem or micro < 1:
        raise ValueError(
            f"train.batch_size={tc.batch_size} must be divisible by processes ({world}) x "
            f"train.grad_accum ({tc.grad_accum})"
        )
    return micro


def make_optimizer(
    cfg: RunConfig, model: nn.Module, fused: bool
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    tc = cfg.train
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=tc.lr,
        betas=tc.betas,
        weight_decay=tc.weight_decay,
        **({"fused": True} if fused else {}),
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))


def make_loader(
    cfg: RunConfig,
    source: ImageSource,
    train_idx: list[int],
    *,
    start_step: int,
    micro: int,
    rank: int,
    world: int,
    cuda: bool,
) -> DataLoader:
    """Sample ``g`` of the run is a pure function of ``(seed, g)``; each rank takes its share of
    every global micro-batch, from ``start_step`` on (exact resume on any number of processes)."""
    dc, tc = cfg.data, cfg.train
    train_set = TrainCrops(
        source,
        train_idx,
        dc.crop_size,
        flip=dc.flip,
        rotate=dc.rotate,
        seed=tc.seed,
        check="none" if dc.kind == "shards" else dc.check,  # shards: checked when packed
    )
    return DataLoader(
        train_set,
        batch_size=micro,
        sampler=GlobalSampleSampler(start_step * tc.batch_size, micro, rank, world),
        num_workers=dc.num_workers,
        pin_memory=dc.pin_memory and cuda,
        collate_fn=collate,
        persistent_workers=dc.num_workers > 0,
        prefetch_factor=4 if dc.num_workers > 0 else None,
        worker_init_fn=loader_worker_init,
    )


def restore(
    path: Path,
    cfg: RunConfig,
    model: nn.Module,
    ema: EMA,
    opt: torch.optim.Optimizer,
    lr_sched: torch.optim.lr_scheduler.LambdaLR,
    scaler: torch.amp.GradScaler | None,
    files: tuple[str, str] = ("model.safetensors", "ema.safetensors"),
) -> dict[str, Any]:
    """Resume from checkpoint ``path``: weights and EMA (from ``files``), optimizer, LR schedule,
    scaler and the torch RNG. Returns the training state (step, skipped steps, seconds so far)."""
    tc = cfg.train
    ckpt.load_weights(model, path / files[0])
    ckpt.load_weights(ema.model, path / files[1])
    state = ckpt.read_state(path)
    planned = kept_plan(state, tc.budget_minutes)  # train.budget_minutes' plan, made earlier
    if planned is not None:
        tc.steps = planned
    opt.load_state_dict(state["optimizer"])
    lr_sched.load_state_dict(state["lr_schedule"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    # The config's learning rate wins on resume (same value: same schedule, bit for bit).
    lr_sched.base_lrs = [tc.lr for _ in opt.param_groups]
    factor = lr_lambda(cfg)(int(state["step"]))
    for group in opt.param_groups:
        group["initial_lr"] = tc.lr
        group["lr"] = tc.lr * factor
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    return state


def init_folder(cfg: RunConfig) -> Path:
    """``train.init_from`` resolved to a checkpoint folder whose network has this run's shape;
    a network of another shape is an error naming the differing model fields."""
    folder = ckpt.resolve_checkpoint(str(cfg.train.init_from), need_state=False)
    theirs = from_dict(ModelConfig, ckpt.read_config(folder).get("model", {}), prefix="model.")
    diffs = [
        f"model.{f} is {getattr(cfg.model, f)!r} here but {getattr(theirs, f)!r} there"
        for f in cfg.model.network_kwargs()
        if f not in ARCH_FREE and getattr(cfg.model, f) != getattr(theirs, f)
    ]
    if diffs:
        raise ValueError(
            f"train.init_from={cfg.train.init_from}: that network has another shape ("
            + "; ".join(diffs)
            + "); set the model section to match it, or leave train.init_from out"
        )
    return folder


def init_weights(cfg: RunConfig, model: nn.Module, ema: EMA) -> Path:
    """``train.init_from``: load a checkpoint's weights (and EMA, or the weights again) into a
    fresh run."""
    folder = init_folder(cfg)
    ckpt.load_weights(model, folder / "model.safetensors")
    ckpt.load_weights(ema.model, ckpt.weights_file(folder, ema=True))
    return folder
