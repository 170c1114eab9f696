"""Noise schedules, training objectives and samplers. No network, no training, no files."""

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
    make_denoiser,
    network_calls,
    sample,
)
from condiff.diffusion.schedule import NoiseSchedule

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
