"""``train.budget_minutes``: fit a run's step count to a budget of training minutes.

Recipes are judged at a fixed budget ("16 minutes on one H100"), but a cosine schedule ends at
``train.steps``, and the steps a budget buys depend on the machine. With ``budget_minutes`` set,
the run times a few steps early in its first call (the first step, which compiles, excluded),
then cuts ``train.steps`` (never raises it: it stays the upper bound) to the step the measured
speed reaches when the budget is spent. The warm-up is usually still running then, so the
schedule changes before its cosine starts. The plan is written into every checkpoint
(``planned_steps`` in ``state.pt``): a resumed call that still sets a budget keeps it, so
chained calls (``train.max_minutes`` + ``--resume auto``) train to the same step and resume
exactly; one without ``budget_minutes`` trains to its own ``train.steps`` (to extend a run).

The budget counts the training loop's seconds over all calls (``train_seconds``), not start-up.
"""

from __future__ import annotations

import math

MARGIN = 0.03  # of the remaining time, kept for validations and checkpoints


def kept_plan(state: dict, budget_minutes: float | None) -> int | None:
    """The plan a checkpoint's state carries, if this call still sets a budget (else None)."""
    if budget_minutes is None or "planned_steps" not in state:
        return None
    return int(state["planned_steps"])


def calibration_steps(steps: int) -> int:
    """Steps of the first call timed before the plan: 50, or a tenth of a short run (>= 3)."""
    return max(3, min(50, steps // 10))


def planned_steps(
    *, step: int, configured: int, steps_per_s: float, seconds_used: float, budget_minutes: float
) -> int:
    """The last step of the run: ``step`` plus the steps ``steps_per_s`` fits in what is left of
    the budget (less a margin), at most ``configured`` and at least ``step``."""
    left = max(0.0, 60.0 * budget_minutes - seconds_used) * (1.0 - MARGIN)
    more = math.floor(steps_per_s * left) if math.isfinite(steps_per_s) else configured
    return max(step, min(configured, step + more))


def plan_message(*, budget_minutes: float, img_s: float, planned: int, configured: int) -> str:
    cut = f"train.steps {configured:,} cut" if planned < configured else "train.steps kept"
    return (
        f"budget {budget_minutes:g} min: {img_s:,.1f} img/s measured, training to step "
        f"{planned:,} ({cut})"
    )
