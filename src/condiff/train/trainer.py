"""The ``Trainer``: a run's state after set-up, and the periodic and stop phases.

:func:`condiff.train.fit` drives it: set up, :meth:`Trainer.start` (resume or ``init_from``,
then the loader and the log), then per step
:func:`condiff.train.step.optimizer_step`, :meth:`Trainer.after_step` (log, validate,
checkpoint) and :meth:`Trainer.stop_reason`, and at the end :meth:`Trainer.close`.
"""

from __future__ import annotations

import gc
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel as DDP

from condiff import checkpoint as ckpt
from condiff.config import RunConfig, save_config
from condiff.data import ValCrops, check_channels, make_source, split
from condiff.diffusion import NoiseSchedule
from condiff.nn import set_attention_kernel
from condiff.nn.attention import get_attention_kernel
from condiff.nn.compiled import compile_module
from condiff.nn.precision import resolve_precision
from condiff.train.budget import kept_plan, plan_message, planned_steps
from condiff.train.distributed import init_distributed, shutdown
from condiff.train.ema import EMA
from condiff.train.log import RunLog
from condiff.train.setup import (
    build_model,
    init_folder,
    init_weights,
    make_loader,
    make_optimizer,
    micro_batch,
    restore,
)
from condiff.train.startup import StartupClock
from condiff.train.step import (
    Pending,
    nonfinite_grads,
    nonfinite_kind,
    nonfinite_norms,
    skip_text,
)
from condiff.train.stop import StopFlag
from condiff.train.validate import validate


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps (loss or gradient); the last good checkpoint is kept."""


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


@dataclass
class Window:
    """Running sums of the current log window."""

    # the finite steps' summed loss, on the run's device (float64): read once per window, since
    # a float() per step would wait for the optimizer step and EMA just queued behind it
    loss: float | Tensor = 0.0
    steps: int = 0
    # the run's skipped steps when the window opened: its finite steps are ``steps`` less the
    # skipped since (a step decided on the device is booked when it is settled, a step later)
    skipped_before: int = 0
    images: int = 0
    t0: float = field(default_factory=time.perf_counter)


class Trainer:
    """Set-up: device, data, model, EMA, optimizer, schedules. The loop lives in ``fit()``."""

    def __init__(self, cfg: RunConfig, *, progress: bool = True) -> None:
        self.cfg, tc = cfg, cfg.train
        self.clock = StartupClock()
        self.dist, self.device = init_distributed(tc.device)
        cuda = self.device.type == "cuda"
        self.precision = resolve_precision(tc.precision, self.device)
        self.channels_last = tc.channels_last if tc.channels_last is not None else cuda
        self.micro = micro_batch(cfg, self.dist.world)
        self.run_dir = Path(tc.output_dir)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.progress = progress
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self.source = make_source(cfg.data, bundled_dest=self.run_dir / "data")
        check_channels(cfg.model, self.source, cfg.diffusion.residual)
        self.train_idx, val_idx = split(self.source, cfg.data.val_count)
        self.val_set = ValCrops(self.source, val_idx, cfg.data.crop_size) if val_idx else None
        self.clock.mark("data")

        torch.manual_seed(tc.seed)
        self.model: nn.Module = build_model(cfg).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, tc.ema_decay)
        # listed once: the update walks them every step (weights load in place, so they stay)
        self.named_params = list(self.model.named_parameters())  # the unwrapped model's names
        fused = tc.fused_adamw if tc.fused_adamw is not None else cuda
        self.opt, self.lr_sched = make_optimizer(cfg, self.model, fused)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.precision == "fp16" else None
        self.schedule = NoiseSchedule.from_config(cfg.diffusion)
        self.clock.mark("model")
        # the perceptual stage: discriminator, VGG16 features, the frozen diffusion weights
        self.adv = None
        if cfg.perceptual.enabled:
            if cfg.diffusion.objective == "eps":
                raise ValueError(
                    "perceptual.enabled needs diffusion.objective v or x0: an eps network's "
                    "one-call x0 divides by sqrt(alpha_bar) ~ 0 at the top timestep"
                )
            from condiff.train.adversarial import Adversarial

            self.adv = Adversarial(cfg, self.device, self.channels_last)
        if self.adv is not None:
            self.clock.mark("perceptual")
        self.step = 0
        self.seconds_before = 0.0  # training-loop seconds of earlier calls (resumed runs)
        self.result = FitResult(self.run_dir, 0, None)
        self.net: nn.Module = self.model
        self.ddp: DDP | None = None
        self.graphs = False  # the compiled network replays CUDA graphs (train.cuda_graphs)
        self.log: RunLog | None = None
        self.nonfinite_run = 0
        self.nonfinite_where = ""  # the first skipped step of the current run, in words
        self.pending: Pending | None = None  # a step decided on the device, not yet read
        self.t_start = time.perf_counter()  # the training loop's start (set again by fit)
        self.t_first = self.t_start  # the end of this call's first step
        self.planned = False  # train.budget_minutes: the step count fitted (kept on resume)

    # --- resume / init_from ------------------------------------------------------------------

    def start(self, resume: str | None) -> None:
        """``resume``: None, "auto" (newest whole checkpoint of the run, if any) or a checkpoint
        path; with none found, ``train.init_from`` (if set) gives the starting weights."""
        tc, notes = self.cfg.train, []
        path = None
        if self.dist.is_main:  # a save cut short by a second signal left its folder behind
            for stale in self.ckpt_root.glob(".tmp-step_*"):
                shutil.rmtree(stale, ignore_errors=True)
                notes.append(f"removed {stale.name} (an unfinished checkpoint save)")
        if resume:
            path = (
                ckpt.latest_checkpoint(self.ckpt_root)
                if resume == "auto"
                else ckpt.resolve_checkpoint(resume)
            )
            if path is None:
                start = f"from {tc.init_from}" if tc.init_from else "from scratch"
                notes.append(f"--resume auto: no checkpoint in {self.ckpt_root}; starting {start}")
        if path is not None:
            args = (self.cfg, self.model, self.ema, self.opt, self.lr_sched, self.scaler)
            state = restore(path, *args, files=self._weight_files())
            if self.adv is not None:
                self.adv.restore(path, state)
            self.step = int(state["step"])
            self.seconds_before = float(state.get("train_seconds", 0.0))
            self.planned = kept_plan(state, tc.budget_minutes) is not None
            self.result = FitResult(self.run_dir, self.step, path)
            notes.append(f"resumed from {path} at step {self.step}")
        elif self.adv is not None and tc.init_from:
            folder = init_folder(self.cfg)
            self.adv.init_from(folder, self.model, self.ema.model)
            notes.append(f"perceptual stage: generator initialised from {folder}'s EMA weights")
        elif self.adv is not None:
            raise ValueError(
                "perceptual.enabled needs train.init_from: a trained diffusion run or checkpoint "
                "(or pretrained:NAME) to fine-tune into the perceptual estimate"
            )
        elif tc.init_from:
            folder = init_weights(self.cfg, self.model, self.ema)
            notes.append(f"initialised from {folder} (weights and EMA; fresh optimizer)")
        self.clock.mark("weights")
        if self.dist.is_main:
            save_config(self.cfg, self.run_dir / "config.yaml")
        notes += self._wrap()
        self.clock.mark("wrap")  # DDP, the attention kernel, torch.compile's wrapper (imports)
        self.batches: Iterator[tuple[Tensor, Tensor]] = iter(self._loader())
        self.clock.mark("loader")
        if self.dist.is_main:
            self.log = RunLog(
                self.run_dir,
                start_step=self.step,
                total=tc.steps,
                batch_size=tc.batch_size,
                progress=self.progress,
            )
            for note in notes:
                self.log.message(note)

    def _weight_files(self) -> tuple[str, str]:
        """The checkpoint files of the trained weights and their EMA."""
        if self.adv is not None:
            from condiff.train.adversarial import GENERATOR, PERCEPTUAL

            return GENERATOR, PERCEPTUAL
        return "model.safetensors", "ema.safetensors"

    def _wrap(self) -> list[str]:
        """DDP across processes, the attention kernel, and torch.compile (on CUDA by default),
        with CUDA graphs where ``train.cuda_graphs`` asks. Returns notes for the log."""
        tc, dev = self.cfg.train, self.device
        if self.dist.enabled:
            ids = [dev.index] if dev.type == "cuda" else None
            self.net = self.ddp = DDP(self.model, device_ids=ids)
        if self.adv is not None:
            self.adv.wrap(self.dist.enabled, dev)
        set_attention_kernel(tc.attention)
        compiled = tc.compile if tc.compile is not None else dev.type == "cuda"
        without = self._no_graphs_because()
        if compiled and tc.cuda_graphs and without is None:
            # one graph per shape: the batch and crop are fixed, dynamic shapes would only cost
            self.net = compile_module(self.net, mode="reduce-overhead", dynamic=False)
            self.graphs = True
            return ["train.cuda_graphs: the compiled forward and backward replay as CUDA graphs"]
        if compiled:
            self.net = compile_module(self.net)
        if without is None:
            return []
        runs = "runs compiled, without graphs" if compiled else "runs without graphs"
        return [f"train.cuda_graphs: {without}; the network {runs}"]

    def _no_graphs_because(self) -> str | None:
        """Why ``train.cuda_graphs`` cannot be honoured here (None: it can, or was not asked)."""
        if not self.cfg.train.cuda_graphs:
            return None
        if self.device.type != "cuda":
            return f"no CUDA device ({self.device})"
        if self.adv is not None:  # its discriminator step reads every micro-step's output
            return "not in the perceptual stage"
        return None

    def _loader(self):
        self.loader = make_loader(
            self.cfg,
            self.source,
            self.train_idx,
            start_step=self.step,
            micro=self.micro,
            rank=self.dist.rank,
            world=self.dist.world,
            cuda=self.device.type == "cuda",
        )
        return self.loader

    # --- the periodic work: log, validate, checkpoint ----------------------------------------

    def window(self) -> Window:
        """A new log window."""
        return Window(skipped_before=self.result.skipped_steps)

    def report_startup(self) -> None:
        """After the first step of this call (settled, so the GPU is done)."""
        self.settle()
        self.clock.mark("first step")
        self.t_first = time.perf_counter()
        if self.log is not None:
            self.log.startup(self.step, self.clock.phases, self.clock.summary())

    def plan_budget(self, timed_steps: int) -> None:
        """``train.budget_minutes``: cut ``train.steps`` to what the speed of this call's steps
        after the first (``timed_steps`` of them) fits in the budget; rank 0's plan for all."""
        tc, now = self.cfg.train, time.perf_counter()
        budget = float(tc.budget_minutes or 0.0)
        rate = timed_steps / max(now - self.t_first, 1e-9)
        planned = planned_steps(
            step=self.step,
            configured=tc.steps,
            steps_per_s=rate,
            seconds_used=self.seconds_before + now - self.t_start,
            budget_minutes=budget,
        )
        if self.dist.enabled:
            t = torch.tensor([planned], device=self.device)
            torch.distributed.broadcast(t, src=0)
            planned = int(t.item())
        configured, tc.steps, self.planned = tc.steps, planned, True
        if self.log is not None:
            img_s = rate * tc.batch_size
            text = plan_message(
                budget_minutes=budget, img_s=img_s, planned=planned, configured=configured
            )
            self.log.budget(self.step, planned, round(img_s, 1), text)

    def count(self, window: Window, loss: Tensor, finite: bool | None) -> None:
        """Book one step: the window's sums, or a skipped (non-finite) step. ``finite`` None: the
        step was decided on the device (``tr.pending``), and is booked when settled."""
        self.step += 1
        self.result.step = self.step
        window.images += self.cfg.train.batch_size
        window.steps += 1
        if finite is None and self.pending is not None:
            self.pending.loss = loss = loss.detach()
            window.loss = window.loss + torch.where(self.pending.ok, loss.double(), 0.0)
            return
        if finite:
            self.nonfinite_run = 0
            window.loss = window.loss + loss.detach().double()
            return
        self._skipped(self.step - 1, lambda: self._where_nonfinite(loss))

    def settle(self) -> None:
        """Read the pending step's finiteness (the one host read of a step decided on the
        device) and book it: the LR schedule's step, or a skipped step."""
        p, self.pending = self.pending, None
        if p is None:
            return
        if bool(p.ok):
            self.nonfinite_run = 0
            self.lr_sched.step()
            return
        self._skipped(p.step, lambda: self._where_nonfinite_norms(p))

    def _skipped(self, step: int, where: Callable[[], str]) -> None:
        """Book skipped step ``step`` (0-based); say where the first of a run went non-finite;
        stop the run after ``train.max_nonfinite`` in a row."""
        self.nonfinite_run += 1
        self.result.skipped_steps += 1
        if self.nonfinite_run == 1:  # the first of a run of skipped steps: say where it went
            self.nonfinite_where = where()
            if self.log is not None:
                self.log.message(f"step {step} skipped: {self.nonfinite_where}")
        if self.log is not None:
            self.log.skipped(step, self.result.skipped_steps)
        if self.nonfinite_run >= self.cfg.train.max_nonfinite:
            last = ckpt.latest_checkpoint(self.ckpt_root)
            raise TrainingDiverged(
                f"{self.nonfinite_run} consecutive non-finite steps at step {step} "
                f"(the first: {self.nonfinite_where}); stopping. Last good checkpoint: "
                f"{last or 'none yet'}. {self._divergence_hint()}"
            )

    def _where_nonfinite(self, loss: Tensor) -> str:
        """A skipped step in words: the loss, and the parameters whose gradient is not finite."""
        names, bad, total = nonfinite_grads(self.model)
        kind = nonfinite_kind(self.model) if bad else "none"
        return skip_text(float(loss), names, bad, total, kind)

    def _where_nonfinite_norms(self, p: Pending) -> str:
        """The same for a step decided on the device, from its per-parameter gradient norms."""
        names, bad, total, kind = nonfinite_norms([n for n, _ in p.named], p.norms.tolist())
        return skip_text(float(p.loss) if p.loss is not None else math.nan, names, bad, total, kind)

    def _divergence_hint(self) -> str:
        """The levers worth trying, leaving out the ones the run already pulls."""
        tc = self.cfg.train
        tips = [f"a lower train.lr (now {tc.lr:g})"]
        if self.precision == "fp16":
            tips.append("train.precision=bf16 instead of fp16")
        if not 0 < tc.grad_clip <= 1.0:
            tips.append("train.grad_clip=1.0")
        kernel = get_attention_kernel()
        if kernel == "triton":
            tips.append("train.attention=sdpa (rules condiff's Triton attention kernel out)")
        elif kernel == "sdpa" and self.device.type == "cuda":
            tips.append("train.attention=sdpa-flash (keeps SDPA off its cuDNN backward)")
        return "Try " + ", ".join(tips[:-1]) + (" or " if len(tips) > 1 else "") + tips[-1]

    def after_step(self, window: Window, grad_norm: Tensor) -> Window:
        """Log a finished window, validate, checkpoint, as their intervals say."""
        tc, step = self.cfg.train, self.step
        last = step == tc.steps
        if step % tc.log_every == 0 or last:
            self.settle()
            self._log_window(window, grad_norm)
            window = self.window()
        if self.log is not None:
            self.log.step()
        if self.log is not None and self.val_set is not None and (step % tc.val_every == 0 or last):
            metrics, grid = validate(
                self.cfg,
                self.ema.model,
                self.schedule,
                self.val_set,
                self.device,
                self.precision,
                estimates=("perceptual",) if self.adv is not None else ("mean", "sample"),
            )
            self.result.history.append(
                {"step": step, **{f"val_{k}": v for k, v in metrics.items()}}
            )
            show = step % tc.image_every == 0 or last
            columns = "cond|perceptual|target" if self.adv else "cond|mean|sample|target"
            self.log.validation(step, metrics, grid if show else None, columns)
        if step % tc.ckpt_every == 0 or last:
            self.result.checkpoint = self.save()
        return window

    def _log_window(self, w: Window, grad_norm: Tensor) -> None:
        finite = w.steps - (self.result.skipped_steps - w.skipped_before)
        mean_loss = float(w.loss) / max(1, finite)  # waits for the window's queued work: timed
        dt = time.perf_counter() - w.t0
        ips = w.images / dt if dt > 0 else 0.0
        self.result.img_per_s = ips
        self.result.history.append({"step": self.step, "loss": mean_loss, "img_per_s": ips})
        if self.log is not None:
            self.log.train(
                self.step,
                loss=mean_loss,
                lr=self.lr_sched.get_last_lr()[0],
                grad_norm=float(grad_norm),
                img_s=ips,
                skipped=self.result.skipped_steps,
                terms=None if self.adv is None else {k: float(v) for k, v in self.adv.last.items()},
            )

    def save(self) -> Path | None:
        """Rank 0 writes a whole checkpoint (atomically); every rank waits for it."""
        self.settle()  # the LR schedule and the counts include the last step
        path = None
        if self.dist.is_main:
            state = {
                "step": self.step,
                "samples_seen": self.step * self.cfg.train.batch_size,
                "optimizer": self.opt.state_dict(),
                "lr_schedule": self.lr_sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "torch_rng": torch.get_rng_state(),
                "skipped_steps": self.result.skipped_steps,
                # wall time spent in the training loop so far, over all resumed calls
                "train_seconds": self.seconds_before + time.perf_counter() - self.t_start,
            }
            if self.planned:
                state["planned_steps"] = self.cfg.train.steps
            model, ema, extra = self.model, self.ema.model, None
            if self.adv is not None:  # the diffusion weights ride along; the generator beside
                model, ema = self.adv.frozen["model"], self.adv.frozen["ema"]
                extra = self.adv.files(self.model, self.ema.model)
                state["disc_optimizer"] = self.adv.opt.state_dict()
            path = ckpt.save_checkpoint(
                self.ckpt_root,
                self.step,
                config=self.cfg.to_dict(),
                model=model,
                ema=ema,
                state=state,
                keep_last=self.cfg.train.keep_last,
                extra=extra,
            )
        if self.dist.enabled:
            torch.distributed.barrier()
        return path

    # --- the stop: signal, max_minutes, stop_after, last save --------------------------------

    def stop_reason(self, stop: StopFlag, stop_after: int | None, steps_this_call: int) -> str:
        """Why to stop now ("" to go on), agreed by every rank (all-reduced)."""
        tc = self.cfg.train
        reason = ""
        if stop.set:
            reason = stop.name
        elif stop_after is not None and steps_this_call >= stop_after:
            reason = "stop_after"
        elif tc.max_minutes and time.perf_counter() - self.t_start > 60 * tc.max_minutes:
            reason = "time limit"
        if self.dist.enabled:  # every rank stops at the same step, whichever rank saw it
            flag = torch.tensor([len(reason)], device=self.device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            reason = reason or ("a signal to another rank" if int(flag.item()) else "")
        return reason

    def interrupt(self, reason: str) -> None:
        """Stop early: save unless this step was just saved."""
        if self.step % self.cfg.train.ckpt_every:
            self.result.checkpoint = self.save()
        self.result.interrupted, self.result.stop_reason = True, reason

    def close(self) -> None:
        """Close the log; stop the loader workers, then tear down the process group."""
        self.settle()
        if self.log is not None:
            self.log.close()
        del self.batches, self.loader  # stop the loader workers before the process group goes
        if self.dist.enabled:
            # Free DDP (it holds the gloo/NCCL group) while Python is fully alive: left to the
            # interpreter's exit, a gloo group's threads aborted a rank ("terminate called
            # without an active exception", SIGABRT) in about 1 of 24 CPU runs of torchrun.
            self.net = self.ddp = None  # type: ignore[assignment]
            if self.adv is not None:
                self.adv.disc_net = self.adv.disc
            shutdown()
            gc.collect()
