"""The step phase: one optimizer step of forward, loss, backward, clip, update and EMA.

Timesteps, noise and dropout are drawn from seeds that are pure functions of ``(seed, step,
micro-step)``, for the whole global micro-batch, of which each rank takes its slice: the same
draws whatever the number of processes, so a resumed or re-sharded run continues bit for bit.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from condiff.diffusion import diffusion_loss
from condiff.diffusion.objectives import encode_target
from condiff.nn.precision import autocast_ctx


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


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (SplitMix-style mixing), stable across processes."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (p + 0x9E3779B97F4A7C15 + (x << 6) + (x >> 2))) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return x & 0x7FFFFFFFFFFFFFFF


def on_device(tr, cond: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """A loader batch on the run's device, channels-last where the run is."""
    cond, x0 = cond.to(tr.device, non_blocking=True), x0.to(tr.device, non_blocking=True)
    if tr.channels_last:
        cond = cond.contiguous(memory_format=torch.channels_last)
        x0 = x0.contiguous(memory_format=torch.channels_last)
    return cond, x0


def rank_slice(tr, x_all: Tensor) -> Tensor:
    """This rank's rows of a draw made for the whole global micro-batch."""
    lo = tr.dist.rank * tr.micro
    return x_all[lo : lo + tr.micro]


def accumulating(tr, ddp, k: int) -> contextlib.AbstractContextManager:
    """Micro-step ``k``: accumulating micro-steps skip DDP's all-reduce; the last one syncs."""
    if ddp is None or k == tr.cfg.train.grad_accum - 1:
        return contextlib.nullcontext()
    return ddp.no_sync()


def micro_loss(tr, cond: Tensor, x0: Tensor, step: int, k: int) -> Tensor:
    """The loss of micro-step ``k`` of ``step`` on this rank's slice (already / grad_accum)."""
    cfg, dev = tr.cfg, tr.device
    d = cfg.diffusion
    cond, x0 = on_device(tr, cond, x0)
    x0 = encode_target(x0, cond, residual=d.residual, scale=d.target_scale)
    g_batch = tr.dist.world * tr.micro
    gen = torch.Generator(dev).manual_seed(mix_seed(cfg.train.seed, step, k))
    t_all = sample_timesteps(g_batch, tr.schedule.num_timesteps, d.top_t_fraction, dev, gen)
    eps_all = torch.randn((g_batch, *x0.shape[1:]), device=dev, generator=gen)
    t, eps = rank_slice(tr, t_all), rank_slice(tr, eps_all)
    torch.manual_seed(mix_seed(cfg.train.seed, step, k, 1))  # dropout and condition dropout
    with autocast_ctx(tr.precision, dev):
        loss = diffusion_loss(
            tr.net,
            x0,
            cond,
            tr.schedule,
            objective=d.objective,
            weighting=d.weighting,
            snr_gamma=d.snr_gamma,
            loss=d.loss,
            cond_drop_prob=d.cond_drop_prob,
            t=t,
            eps=eps,
        ).mean()
    return loss / cfg.train.grad_accum


def nonfinite_grads(model: torch.nn.Module, limit: int = 2) -> tuple[list[str], int, int]:
    """Where a skipped step's gradient went non-finite: the names of the first and the last
    ``limit`` parameters (in definition order, near the forward's) whose gradient holds inf or
    NaN, how many do, and how many have a gradient. A NaN born in one layer's backward reaches
    every layer before it, so the last names point at where it arose. Run only on a skipped step
    (one host sync per parameter)."""
    bad: list[str] = []
    total = 0
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        total += 1
        if not bool(torch.isfinite(p.grad).all()):
            bad.append(name.removeprefix("module."))
    return first_and_last(bad, limit), len(bad), total


def first_and_last(names: list[str], limit: int) -> list[str]:
    """``names``, or its first and last ``limit`` around "..." where there are more."""
    return names if len(names) <= 2 * limit else [*names[:limit], "...", *names[-limit:]]


def kind_text(nan: bool, inf: bool) -> str:
    """``"NaN"``, ``"inf"``, ``"NaN and inf"`` or ``"none"``."""
    return " and ".join(k for k, on in (("NaN", nan), ("inf", inf)) if on) or "none"


def nonfinite_kind(model: torch.nn.Module) -> str:
    """What the non-finite gradient values are: ``"NaN"``, ``"inf"`` or ``"NaN and inf"`` (an
    inf points at an overflow, a NaN at 0/0, inf - inf or 0 * inf). Run only on a skipped step."""
    nan = inf = False
    for p in model.parameters():
        if p.grad is not None and not bool(torch.isfinite(p.grad).all()):
            nan = nan or bool(torch.isnan(p.grad).any())
            inf = inf or bool(torch.isinf(p.grad).any())
    return kind_text(nan, inf)


def nonfinite_norms(
    names: list[str], norms: list[float], limit: int = 2
) -> tuple[list[str], int, int, str]:
    """:func:`nonfinite_grads` and :func:`nonfinite_kind` from per-parameter gradient norms
    (a deferred step's gradient is gone when its flag is read): a NaN norm means a NaN in that
    gradient, an inf norm an inf (or, rarely, finite values whose norm overflowed)."""
    bad = [(n, v) for n, v in zip(names, norms, strict=True) if not math.isfinite(v)]
    nan, inf = any(math.isnan(v) for _, v in bad), any(math.isinf(v) for _, v in bad)
    return first_and_last([n for n, _ in bad], limit), len(bad), len(names), kind_text(nan, inf)


def skip_text(loss: float, names: list[str], bad: int, total: int, kind: str) -> str:
    """A skipped step in words: the loss, and the parameters whose gradient is not finite."""
    what = f"loss {loss:.4g} (finite)" if math.isfinite(loss) else f"loss {loss}: the forward pass"
    if not bad:
        return f"{what}; the gradient norm overflowed"
    return (
        f"{what}; non-finite gradient in {bad} of {total} parameters ({', '.join(names)}); "
        f"values: {kind}"
    )


def _grads(model: torch.nn.Module) -> list[Tensor]:
    return [p.grad for p in model.parameters() if p.grad is not None]


def total_grad_norm(model: torch.nn.Module) -> Tensor:
    """The global 2-norm of the gradient, leaving the gradient as it is. Clipping comes after,
    and only for a finite norm: clipping by a non-finite norm would scale every parameter's
    gradient by NaN and hide where the non-finite values arose (see :func:`nonfinite_grads`)."""
    grads = _grads(model)
    if not grads:
        return torch.zeros(())
    if hasattr(torch.nn.utils, "get_total_norm"):  # torch 2.6 or newer
        return torch.nn.utils.get_total_norm(grads)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def clip_to(params: Iterable[Tensor], max_norm: float, total_norm: Tensor) -> None:
    """Scale the gradient of ``params`` down to ``max_norm`` if ``total_norm`` (finite) is above
    it."""
    params = list(params)
    if hasattr(torch.nn.utils, "clip_grads_with_norm_"):  # torch 2.6 or newer
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total_norm)
        return
    coef = (max_norm / (total_norm + 1e-6)).clamp(max=1.0)
    for g in (p.grad for p in params if p.grad is not None):
        g.mul_(coef.to(g.device))


@dataclass
class Pending:
    """A step whose finiteness is still on the device: read (settled) at the next step's update,
    or before a log line, a validation or a checkpoint (``Trainer.settle``)."""

    step: int  # its 0-based index
    ok: Tensor  # the gradient norm is finite (bool, 0-dim)
    named: list[tuple[str, Tensor]]  # the parameters with a gradient, in order...
    norms: Tensor  # ...and their gradient norms: where a skipped step went non-finite
    loss: Tensor | None = None  # its loss (set by ``Trainer.count``)


def deferrable(tr) -> bool:
    """Whether a step's finiteness can be read one step late: fused AdamW skips a non-finite
    step on the device (its ``found_inf``) and the EMA takes a zero weight, so the host read
    waits until the next step's forward and backward are queued. Not with fp16's GradScaler nor
    in the perceptual stage (its discriminator step follows the generator's)."""
    return (
        tr.scaler is None
        and getattr(tr, "adv", None) is None
        and bool(tr.opt.defaults.get("fused"))
    )


def update_on_device(tr, step: int) -> Tensor:
    """:func:`update` without a host read: the norm, the clip (by 0 when the norm is not finite,
    which leaves the gradient as it is), then the previous step settled (its LR schedule step:
    the one host read), then fused AdamW and the EMA, both skipped on the device when the norm is
    not finite. The step is left in ``tr.pending``."""
    tc = tr.cfg.train
    # the parameters listed once (Trainer.named_params): walking the modules every step costs
    # about a millisecond of host time, a tenth of a small network's graphed step
    named = [(n, p) for n, p in tr.named_params if p.grad is not None]
    norms = torch.stack(torch._foreach_norm([p.grad for _, p in named]))
    grad_norm = torch.linalg.vector_norm(norms)
    ok = torch.isfinite(grad_norm)
    if tc.grad_clip > 0:
        by = torch.where(ok, grad_norm, torch.zeros_like(grad_norm))
        clip_to([p for _, p in named], tc.grad_clip, by)
    tr.settle()  # the step before: read by now, as this step's work is queued behind it
    tr.opt.found_inf = (~ok).float()
    try:
        tr.opt.step()
    finally:
        del tr.opt.found_inf
    tr.ema.update(tr.model, step, weight=ok)
    tr.pending = Pending(step, ok, named, norms)
    return grad_norm


def backward(tr, loss: Tensor) -> None:
    (tr.scaler.scale(loss) if tr.scaler is not None else loss).backward()


def update(tr, step: int) -> tuple[Tensor, bool | None]:
    """Clip, and step the optimizer, LR schedule and EMA if the gradient is finite. Returns
    (grad norm, finite); finite is None where the step is decided on the device
    (:func:`deferrable`, then :func:`update_on_device`)."""
    tc = tr.cfg.train
    if deferrable(tr):
        return update_on_device(tr, step), None
    if tr.scaler is not None:
        tr.scaler.unscale_(tr.opt)
    grad_norm = total_grad_norm(tr.model)
    # One host sync per step: grads are all-reduced, so every rank agrees on finiteness.
    finite = bool(torch.isfinite(grad_norm).item())
    if finite and tc.grad_clip > 0:
        clip_to(tr.model.parameters(), tc.grad_clip, grad_norm)
    if tr.scaler is not None:
        tr.scaler.step(tr.opt)
        tr.scaler.update()
    elif finite:
        tr.opt.step()
    if finite:
        tr.lr_sched.step()
        tr.ema.update(tr.model, step)
    return grad_norm, finite


def optimizer_step(
    tr, batches: Iterator[tuple[Tensor, Tensor]], step: int
) -> tuple[Tensor, Tensor, bool | None]:
    """Accumulate ``train.grad_accum`` micro-steps, clip, and step the optimizer, LR schedule and
    EMA if the gradient is finite. Returns (summed loss, grad norm, finite); finite is None
    where it is decided on the device and read a step later (:func:`update_on_device`)."""
    tr.opt.zero_grad(set_to_none=True)
    if tr.graphs:  # a new iteration: the last one's graph outputs may be overwritten
        torch.compiler.cudagraph_mark_step_begin()
    loss_acc = torch.zeros((), device=tr.device)
    for k in range(tr.cfg.train.grad_accum):
        cond, x0 = next(batches)
        with accumulating(tr, tr.ddp, k):
            loss = micro_loss(tr, cond, x0, step, k)
            backward(tr, loss)
        loss_acc += loss.detach()
    grad_norm, finite = update(tr, step)
    return loss_acc, grad_norm, finite
