"""``fit()``: from a RunConfig to a trained model, on one process or many (torchrun + DDP)."""

from __future__ import annotations

import contextlib
import gc
import math
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

from condiff.config import RunConfig, save_config
from condiff.data import (
    GlobalSampleSampler,
    TrainCrops,
    ValCrops,
    check_channels,
    make_source,
    split,
)
from condiff.data.datasets import collate
from condiff.diffusion import NoiseSchedule, diffusion_loss
from condiff.diffusion.objectives import decode_target, encode_target
from condiff.nn import ConditionalUNet, set_attention_kernel
from condiff.train import checkpoint as ckpt
from condiff.train.distributed import init_distributed, shutdown
from condiff.train.ema import EMA
from condiff.train.log import RunLog


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses; the last good checkpoint is kept."""


@dataclass
class FitResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    interrupted: bool = False
    # why an interrupted run stopped: SIGTERM, SIGINT, time limit, a signal to another rank
    stop_reason: str = ""
    skipped_steps: int = 0
    img_per_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_precision(cfg_precision: str, device: torch.device) -> str:
    if cfg_precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return cfg_precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision name; None for fp32 (no autocast)."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast_ctx(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def build_model(cfg: RunConfig) -> ConditionalUNet:
    return ConditionalUNet(**cfg.model.network_kwargs())


def build_schedule(cfg: RunConfig) -> NoiseSchedule:
    d = cfg.diffusion
    return NoiseSchedule(
        d.schedule, d.num_timesteps, rescale_zero_terminal_snr=d.rescale_zero_terminal_snr
    )


def lr_lambda(cfg: RunConfig):
    tc = cfg.train

    def f(step: int) -> float:
        if tc.warmup_steps and step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        if tc.lr_schedule == "cosine":
            span = max(1, tc.steps - tc.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - tc.warmup_steps) / span)))
        return 1.0

    return f


ARCH_FREE = ("preset", "dropout_rate")  # model fields that change no weight shape


def init_weights(cfg: RunConfig, model: nn.Module, ema: EMA) -> Path:
    """``train.init_from``: load a checkpoint's weights (and EMA, or the weights again) into a
    fresh run; a network of another shape is an error naming the differing model fields."""
    from condiff.config import ModelConfig, from_dict

    folder = ckpt.resolve_init(str(cfg.train.init_from))
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
    ckpt.load_weights(model, folder / "model.safetensors")
    ckpt.load_weights(ema.model, ckpt.weights_file(folder, ema=True))
    return folder


def sample_timesteps(
    n: int, num_timesteps: int, top_fraction: float, device: torch.device, gen: torch.Generator
) -> Tensor:
    """``n`` training timesteps: uniform, with a share ``top_fraction`` moved to t = T-1 (where
    the x0 prediction is the posterior mean, the one-call "mean" estimate)."""
    t = torch.randint(0, num_timesteps, (n,), device=device, generator=gen)
    if top_fraction > 0:
        top = torch.rand(n, device=device, generator=gen) < top_fraction
        t = torch.where(top, num_timesteps - 1, t)
    return t


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix-style mixing), stable across processes."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return x & 0x7FFFFFFFFFFFFFFF


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps, so a checkpoint is saved first."""

    def __init__(self) -> None:
        self.set = False
        self.name = ""  # the signal's name, e.g. SIGTERM
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.set:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.set, self.name = True, signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _loader_worker_init(_: int) -> None:
    """Loader workers ignore SIGINT/SIGTERM (a terminal or scheduler signals the whole process
    group): the main process saves a checkpoint first, then shuts them down. A worker killed
    mid-save would make PyTorch raise in the main process and lose that checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# Known noise from torch internals that says nothing to a user of condiff train.
QUIET = (
    r"Profiler function .* will be ignored",  # dynamo tracing through record_function
    r"barrier\(\): using the device under current context",
)


def fit(
    cfg: RunConfig,
    *,
    resume: str | None = None,
    stop_after: int | None = None,
    progress: bool = True,
) -> FitResult:
    """Train ``cfg``. ``resume``: None, "auto" (newest whole checkpoint in the run folder, if any),
    or a checkpoint path. ``stop_after``: leave (saving a checkpoint) after this many steps of this
    call, as an interruption would."""
    for pattern in QUIET:
        warnings.filterwarnings("ignore", message=pattern)
    dist_info, device = init_distributed(cfg.train.device)
    tc = cfg.train
    run_dir = Path(tc.output_dir)
    ckpt_root = run_dir / "checkpoints"
    precision = resolve_precision(tc.precision, device)
    channels_last = tc.channels_last if tc.channels_last is not None else device.type == "cuda"
    fused = tc.fused_adamw if tc.fused_adamw is not None else device.type == "cuda"

    micro, rem = divmod(tc.batch_size, dist_info.world * tc.grad_accum)
    if rem or micro < 1:
        raise ValueError(
            f"train.batch_size={tc.batch_size} must be divisible by processes ({dist_info.world}) x "
            f"train.grad_accum ({tc.grad_accum})"
        )

    if dist_info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    source = make_source(cfg.data, bundled_dest=run_dir / "data")
    check_channels(cfg.model, source, cfg.diffusion.residual)
    train_idx, val_idx = split(source, cfg.data.val_count)

    torch.manual_seed(tc.seed)
    model = build_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, tc.ema_decay)
    opt = torch.optim.AdamW(
        model.parameters(),
        lr=tc.lr,
        betas=tc.betas,
        weight_decay=tc.weight_decay,
        **({"fused": True} if fused else {}),
    )
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg))
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    schedule = build_schedule(cfg)

    start_step, loaded_from, seconds_before = 0, None, 0.0
    if resume:
        path = (
            ckpt.latest_checkpoint(ckpt_root)
            if resume == "auto"
            else ckpt.resolve_checkpoint(resume)
        )
        if path is not None:
            ckpt.load_weights(model, path / "model.safetensors")
            ckpt.load_weights(ema.model, path / "ema.safetensors")
            state = ckpt.read_state(path)
            opt.load_state_dict(state["optimizer"])
            lr_sched.load_state_dict(state["lr_schedule"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            start_step, loaded_from = int(state["step"]), path
            seconds_before = float(state.get("train_seconds", 0.0))
            # The config's learning rate wins on resume (same value: same schedule, bit for bit).
            lr_sched.base_lrs = [tc.lr for _ in opt.param_groups]
            factor = lr_lambda(cfg)(start_step)
            for group in opt.param_groups:
                group["initial_lr"] = tc.lr
                group["lr"] = tc.lr * factor
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"])
    init_folder = init_weights(cfg, model, ema) if loaded_from is None and tc.init_from else None
    if dist_info.is_main:
        save_config(cfg, run_dir / "config.yaml")

    net: nn.Module = model
    ddp: DDP | None = None
    if dist_info.enabled:
        net = ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    set_attention_kernel(tc.attention)
    if tc.compile if tc.compile is not None else device.type == "cuda":
        net = torch.compile(net)

    train_set = TrainCrops(
        source,
        train_idx,
        cfg.data.crop_size,
        flip=cfg.data.flip,
        rotate=cfg.data.rotate,
        seed=tc.seed,
    )
    loader = DataLoader(
        train_set,
        batch_size=micro,
        sampler=GlobalSampleSampler(
            start_step * tc.batch_size, micro, dist_info.rank, dist_info.world
        ),
        num_workers=cfg.data.num_workers,
        pin_memory=cfg.data.pin_memory and device.type == "cuda",
        collate_fn=collate,
        persistent_workers=cfg.data.num_workers > 0,
        prefetch_factor=4 if cfg.data.num_workers > 0 else None,
        worker_init_fn=_loader_worker_init,
    )
    batches: Iterator[tuple[Tensor, Tensor]] = iter(loader)
    val_set = ValCrops(source, val_idx, cfg.data.crop_size) if val_idx else None

    total = tc.steps
    log = None
    if dist_info.is_main:
        log = RunLog(
            run_dir,
            start_step=start_step,
            total=total,
            batch_size=tc.batch_size,
            progress=progress,
        )
        if loaded_from is not None:
            log.message(f"resumed from {loaded_from} at step {start_step}")
        if init_folder is not None:
            log.message(f"initialised from {init_folder} (weights and EMA; fresh optimizer)")

    result = FitResult(run_dir, start_step, loaded_from)

    def save(step: int) -> Path | None:
        path = None
        if dist_info.is_main:
            state = {
                "step": step,
                "samples_seen": step * tc.batch_size,
                "optimizer": opt.state_dict(),
                "lr_schedule": lr_sched.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else {},
                "torch_rng": torch.get_rng_state(),
                "skipped_steps": result.skipped_steps,
                # wall time spent in the training loop so far, over all resumed calls
                "train_seconds": seconds_before + time.perf_counter() - t_start,
            }
            path = ckpt.save_checkpoint(
                ckpt_root,
                step,
                config=cfg.to_dict(),
                model=model,
                ema=ema.model,
                state=state,
                keep_last=tc.keep_last,
            )
        if dist_info.enabled:
            torch.distributed.barrier()
        return path

    g_batch = dist_info.world * micro
    t_start = time.perf_counter()
    nonfinite_run = 0
    log_loss, log_n, log_t0, log_imgs = 0.0, 0, time.perf_counter(), 0
    step = start_step
    steps_this_call = 0
    with _StopFlag() as stop:
        while step < total:
            opt.zero_grad(set_to_none=True)
            loss_acc = torch.zeros((), device=device)
            for k in range(tc.grad_accum):
                cond, x0 = next(batches)
                cond = cond.to(device, non_blocking=True)
                x0 = x0.to(device, non_blocking=True)
                x0 = encode_target(
                    x0, cond, residual=cfg.diffusion.residual, scale=cfg.diffusion.target_scale
                )
                if channels_last:
                    cond = cond.contiguous(memory_format=torch.channels_last)
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                # Timesteps and noise for the whole global micro-batch, then this rank's slice:
                # the same draws whatever the number of processes.
                gen = torch.Generator(device).manual_seed(_seed(tc.seed, step, k))
                t_all = sample_timesteps(
                    g_batch, schedule.num_timesteps, cfg.diffusion.top_t_fraction, device, gen
                )
                eps_all = torch.randn((g_batch, *x0.shape[1:]), device=device, generator=gen)
                lo = dist_info.rank * micro
                t, eps = t_all[lo : lo + micro], eps_all[lo : lo + micro]
                torch.manual_seed(_seed(tc.seed, step, k, 1))  # dropout and condition dropout
                # Accumulating micro-steps skip DDP's all-reduce; the last one syncs.
                last_micro = k == tc.grad_accum - 1
                sync = (
                    ddp.no_sync()
                    if ddp is not None and not last_micro
                    else contextlib.nullcontext()
                )
                with sync:
                    with autocast_ctx(precision, device):
                        loss = (
                            diffusion_loss(
                                net,
                                x0,
                                cond,
                                schedule,
                                objective=cfg.diffusion.objective,
                                weighting=cfg.diffusion.weighting,
                                snr_gamma=cfg.diffusion.snr_gamma,
                                loss=cfg.diffusion.loss,
                                cond_drop_prob=cfg.diffusion.cond_drop_prob,
                                t=t,
                                eps=eps,
                            ).mean()
                            / tc.grad_accum
                        )
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                loss_acc += loss.detach()
            if scaler is not None:
                scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), tc.grad_clip if tc.grad_clip > 0 else float("inf")
            )
            # One host sync per step: grads are all-reduced, so every rank agrees on finiteness.
            finite = bool(torch.isfinite(grad_norm).item())
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            elif finite:
                opt.step()
            if finite:
                lr_sched.step()
                ema.update(model, step)
                nonfinite_run = 0
            else:
                nonfinite_run += 1
                result.skipped_steps += 1
                if log is not None:
                    log.skipped(step, result.skipped_steps)
                if nonfinite_run >= tc.max_nonfinite:
                    last = ckpt.latest_checkpoint(ckpt_root)
                    raise TrainingDiverged(
                        f"{nonfinite_run} consecutive non-finite losses at step {step}; stopping. "
                        f"Last good checkpoint: {last or 'none yet'}. Try a lower train.lr, "
                        "train.precision=bf16 instead of fp16, or train.grad_clip=1.0"
                    )
            step += 1
            steps_this_call += 1
            result.step = step
            log_imgs += tc.batch_size
            if finite:
                log_loss += float(loss_acc)
                log_n += 1

            if step % tc.log_every == 0 or step == total:
                dt = time.perf_counter() - log_t0
                ips = log_imgs / dt if dt > 0 else 0.0
                mean_loss = log_loss / max(1, log_n)
                result.img_per_s = ips
                result.history.append({"step": step, "loss": mean_loss, "img_per_s": ips})
                if log is not None:
                    log.train(
                        step,
                        loss=mean_loss,
                        lr=lr_sched.get_last_lr()[0],
                        grad_norm=float(grad_norm),
                        img_s=ips,
                        skipped=result.skipped_steps,
                    )
                log_loss, log_n, log_t0, log_imgs = 0.0, 0, time.perf_counter(), 0
            if log is not None:
                log.step()

            if (
                log is not None
                and val_set is not None
                and (step % tc.val_every == 0 or step == total)
            ):
                metrics, grid = validate(cfg, ema.model, schedule, val_set, device, precision)
                result.history.append({"step": step, **{f"val_{k}": v for k, v in metrics.items()}})
                log.validation(
                    step, metrics, grid if step % tc.image_every == 0 or step == total else None
                )
            if step % tc.ckpt_every == 0 or step == total:
                result.checkpoint = save(step)
            reason = (
                stop.name
                if stop.set
                else "stop_after"
                if stop_after is not None and steps_this_call >= stop_after
                else "time limit"
                if tc.max_minutes and time.perf_counter() - t_start > 60 * tc.max_minutes
                else ""
            )
            if dist_info.enabled:  # every rank stops at the same step, whichever rank saw it
                flag = torch.tensor([len(reason)], device=device)
                torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
                reason = reason or ("a signal to another rank" if int(flag.item()) else "")
            if reason and step != total:
                if step % tc.ckpt_every:
                    result.checkpoint = save(step)
                result.interrupted, result.stop_reason = True, reason
                break
    if log is not None:
        log.close()
    del batches, loader  # stop the loader workers before the process group goes
    if dist_info.enabled:
        # Free DDP (it holds the gloo/NCCL group) while Python is fully alive: left to the
        # interpreter's exit, a gloo group's threads aborted a rank ("terminate called without
        # an active exception", SIGABRT) in about 1 of 24 CPU runs of torchrun.
        net = ddp = None
        shutdown()
        gc.collect()
    return result


@torch.no_grad()
def validate(
    cfg: RunConfig,
    model: nn.Module,
    schedule: NoiseSchedule,
    val_set: ValCrops,
    device: torch.device,
    precision: str,
) -> tuple[dict[str, float], Tensor]:
    """The held-out crops with the EMA model: PSNR/SSIM of the posterior mean (one network
    call), of samples (``train.val_steps`` steps) and of the task's baseline."""
    from condiff.data.io import from_model
    from condiff.diffusion import sample
    from condiff.diffusion.samplers import estimate_plan
    from condiff.evaluate.metrics import psnr, ssim

    conds, targets = collate([val_set[i] for i in range(len(val_set))])
    conds, targets = conds.to(device), targets.to(device)
    task = val_set.source.task
    tc_ = targets.shape[1]
    d, sc = cfg.diffusion, cfg.sample
    model.eval()
    outs = {}
    for est in ("mean", "sample"):
        sampler, steps, spacing = estimate_plan(est, sc.sampler, cfg.train.val_steps, sc.spacing, 1)
        with autocast_ctx(precision, device):
            z = sample(
                model,
                conds,
                schedule,
                target_channels=tc_,
                sampler=sampler,
                steps=steps,
                generator=torch.Generator(device).manual_seed(0),
                objective=d.objective,
                spacing=spacing,
                clip=sc.clip,
                clip_value=d.target_scale,
            )
        outs[est] = decode_target(z, conds, residual=d.residual, scale=d.target_scale).clamp(-1, 1)
    m: dict[str, list[float]] = {}
    for i in range(len(targets)):
        tgt = from_model(targets[i])
        preds = {f"{k}_": from_model(v[i]) for k, v in outs.items()}
        if task is not None or conds.shape[1] >= tc_:
            base = task.baseline(conds[i].cpu(), tc_) if task is not None else conds[i, :tc_].cpu()
            preds["baseline_"] = from_model(base)
        for prefix, pred in preds.items():
            m.setdefault(prefix + "psnr", []).append(psnr(pred, tgt))
            m.setdefault(prefix + "ssim", []).append(ssim(pred, tgt))
    metrics = {k: float(sum(v) / len(v)) for k, v in m.items()}
    return metrics, image_grid(conds[:4], outs["mean"][:4], outs["sample"][:4], targets[:4])


def image_grid(cond: Tensor, mean: Tensor, sample_: Tensor, target: Tensor) -> Tensor:
    """Rows of condition | mean | sample | target, (3, H*rows, W*4) in [0, 1] for TensorBoard."""
    c = target.shape[1]

    def rgb(x: Tensor) -> Tensor:
        x = x[:, :c] if x.shape[1] >= c else x[:, :1].expand(-1, c, -1, -1)
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
        return ((x.float().clamp(-1, 1) + 1) / 2).cpu()

    rows = [
        torch.cat([rgb(cond)[i], rgb(mean)[i], rgb(sample_)[i], rgb(target)[i]], dim=2)
        for i in range(len(target))
    ]
    return torch.cat(rows, dim=1)
