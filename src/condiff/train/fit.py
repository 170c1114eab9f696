"""``fit()``: from a RunConfig to a trained model, on one process or many (torchrun + DDP).

The driver of the training phases: set-up and restore (:class:`condiff.train.trainer.Trainer`),
the step (:func:`condiff.train.step.optimizer_step`), the periodic work (log, validate,
checkpoint) and the stop (signal, ``train.max_minutes``, last save).
"""

from __future__ import annotations

import time

from condiff.config import RunConfig
from condiff.train.budget import calibration_steps
from condiff.train.step import optimizer_step
from condiff.train.stop import StopFlag, quiet_torch_warnings
from condiff.train.trainer import FitResult, Trainer, TrainingDiverged

__all__ = ["FitResult", "TrainingDiverged", "fit"]


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
    quiet_torch_warnings()
    tr = Trainer(cfg, progress=progress)
    tr.start(resume)
    steps_this_call = 0
    calibrate = calibration_steps(cfg.train.steps)
    tr.t_start = time.perf_counter()
    window = tr.window()
    step_fn = optimizer_step
    if tr.adv is not None:  # the perceptual stage: generator, then discriminator
        from condiff.train.adversarial import adversarial_step

        step_fn = adversarial_step
    with StopFlag() as stop:
        while tr.step < cfg.train.steps:  # cut by train.budget_minutes' plan
            loss, grad_norm, finite = step_fn(tr, tr.batches, tr.step)
            tr.count(window, loss, finite)
            steps_this_call += 1
            if steps_this_call == 1:
                tr.report_startup()
            elif steps_this_call == calibrate and cfg.train.budget_minutes and not tr.planned:
                tr.plan_budget(steps_this_call - 1)
            window = tr.after_step(window, grad_norm)
            reason = tr.stop_reason(stop, stop_after, steps_this_call)
            if reason and tr.step != cfg.train.steps:
                tr.interrupt(reason)
                break
    tr.close()
    return tr.result
