"""Noise schedules, training objectives and samplers. No network, no training, no files.

``schedule`` and ``samplers`` work on numpy arrays as well as torch tensors (the ONNX Runtime
engine runs them without torch); ``objectives`` and ``sampling`` are the torch side.
"""

from typing import TYPE_CHECKING

from condiff._lazy import lazy_exports

_OBJ, _SAMPLERS, _SAMPLING, _DEN = (
    "condiff.diffusion.objectives",
    "condiff.diffusion.samplers",
    "condiff.diffusion.sampling",
    "condiff.diffusion.denoiser",
)
_MEMBERS = {
    "SAMPLERS": _SAMPLERS,
    "NoiseSchedule": "condiff.diffusion.schedule",
    "concat_condition": _OBJ,
    "ddim": _SAMPLERS,
    "ddpm": _SAMPLERS,
    "diffusion_loss": _OBJ,
    "dpmpp_2m": _SAMPLERS,
    "eps_from_x0": _OBJ,
    "euler": _SAMPLERS,
    "get_sampler": _SAMPLERS,
    "heun": _SAMPLERS,
    "make_denoiser": _DEN,
    "network_calls": _SAMPLERS,
    "q_sample": _OBJ,
    "sample": _SAMPLING,
    "target_for": _OBJ,
    "to_x0": _OBJ,
}
__getattr__ = lazy_exports(__name__, _MEMBERS)
__all__ = [
    "SAMPLERS",
    "NoiseSchedule",
    "concat_condition",
    "ddim",
    "ddpm",
    "diffusion_loss",
    "dpmpp_2m",
    "eps_from_x0",
    "euler",
    "get_sampler",
    "heun",
    "make_denoiser",
    "network_calls",
    "q_sample",
    "sample",
    "target_for",
    "to_x0",
]

if TYPE_CHECKING:
    from condiff.diffusion.denoiser import make_denoiser
    from condiff.diffusion.objectives import (
        concat_condition,
        diffusion_loss,
        eps_from_x0,
        q_sample,
        target_for,
        to_x0,
    )
    from condiff.diffusion.samplers import (
        SAMPLERS,
        ddim,
        ddpm,
        dpmpp_2m,
        euler,
        get_sampler,
        heun,
        network_calls,
    )
    from condiff.diffusion.sampling import sample
    from condiff.diffusion.schedule import NoiseSchedule
