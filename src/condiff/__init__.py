"""condiff: conditional image-to-image diffusion built on the spec's ConditionalUNet."""

from condiff.diffusion import NoiseSchedule, diffusion_loss, q_sample, sample
from condiff.infer import Pipeline, load
from condiff.nn import ConditionalUNet
from condiff.train import fit

__version__ = "0.1.0"
__all__ = [
    "ConditionalUNet",
    "NoiseSchedule",
    "Pipeline",
    "__version__",
    "diffusion_loss",
    "fit",
    "load",
    "q_sample",
    "sample",
]
