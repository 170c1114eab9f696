"""CUDA-graph capture of a whole sampling loop (static shapes per batch size).

Sampling launches hundreds of small kernels per network call; replaying one captured graph removes
the launch gaps. The sampler must be deterministic (no fresh noise inside the loop): ddim with
eta=0, dpmpp_2m, euler, heun.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from condiff.diffusion import NoiseSchedule, make_denoiser
from condiff.diffusion.samplers import get_sampler

DETERMINISTIC = ("ddim", "dpmpp_2m", "euler", "heun")


class GraphedSampler:
    """``sampler(model, cond, x_T)`` captured once for fixed shapes, then replayed."""

    def __init__(
        self,
        model: Callable[[Tensor, Tensor], Tensor],
        schedule: NoiseSchedule,
        cond: Tensor,
        x_T: Tensor,
        *,
        sampler: str,
        steps: int,
        objective: str,
        spacing: str,
        clip: bool,
        autocast_dtype: torch.dtype | None,
        clip_value: float = 1.0,
        warmup: int = 2,
    ) -> None:
        if sampler not in DETERMINISTIC:
            raise ValueError(
                f"CUDA graphs need a deterministic sampler {DETERMINISTIC}, got {sampler!r}"
            )
        fn = get_sampler(sampler)
        timesteps = schedule.timesteps(steps, spacing)
        self.cond, self.x_T = cond.clone(), x_T.clone()
        denoise = make_denoiser(
            model,
            self.cond,
            schedule,
            objective=objective,
            clip=clip,
            clip_value=clip_value,
            dtype=torch.float32,
        )

        def run() -> Tensor:
            with torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None):
                return fn(denoise, self.x_T, schedule, timesteps)

        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.no_grad():
            for _ in range(warmup):  # compile / autotune / allocate outside the capture
                run()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.no_grad():
            self.out = run()

    def __call__(self, cond: Tensor, x_T: Tensor) -> Tensor:
        self.cond.copy_(cond)
        self.x_T.copy_(x_T)
        self.graph.replay()
        return self.out.clone()
