"""condiff: conditional image-to-image diffusion built on the spec's ConditionalUNet."""

from condiff.diffusion import NoiseSchedule, diffusion_loss, q_sample, sample
from condiff.nn import ConditionalUNet

__version__ = "0.1.0"
__all__ = ["ConditionalUNet", "NoiseSchedule", "__version__", "diffusion_loss", "q_sample", "sample"]
