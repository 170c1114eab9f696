"""Training: fit() drives the phases (set-up, restore, step, periodic work, stop); EMA;
torchrun/DDP. Checkpoints are :mod:`condiff.checkpoint` (shared with inference and export)."""

from condiff.train.fit import FitResult, TrainingDiverged, fit

__all__ = ["FitResult", "TrainingDiverged", "fit"]
