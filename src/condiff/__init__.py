"""condiff: conditional image-to-image diffusion built on the spec's ConditionalUNet.

Members load on first use (``condiff._lazy``): ``import condiff`` alone does not import torch.
"""

from typing import TYPE_CHECKING

from condiff._lazy import lazy_exports

__version__ = "0.3.0"
_MEMBERS = {
    "ConditionalUNet": "condiff.nn",
    "NoiseSchedule": "condiff.diffusion.schedule",
    "Pipeline": "condiff.infer.pipeline",
    "diffusion_loss": "condiff.diffusion.objectives",
    "fit": "condiff.train",
    "load": "condiff.infer.pipeline",
    "q_sample": "condiff.diffusion.objectives",
    "sample": "condiff.diffusion.sampling",
}
__getattr__ = lazy_exports(__name__, _MEMBERS)
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

if TYPE_CHECKING:
    from condiff.diffusion.objectives import diffusion_loss, q_sample
    from condiff.diffusion.sampling import sample
    from condiff.diffusion.schedule import NoiseSchedule
    from condiff.infer.pipeline import Pipeline, load
    from condiff.nn import ConditionalUNet
    from condiff.train import fit
