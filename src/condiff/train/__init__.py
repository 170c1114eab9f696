"""Training: fit(), EMA, checkpoints, torchrun/DDP."""

from condiff.train.fit import FitResult, TrainingDiverged, fit

__all__ = ["FitResult", "TrainingDiverged", "fit"]
