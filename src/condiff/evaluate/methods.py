"""Methods: the ways an evaluation turns a condition into an estimate of the target.

The task's baseline (bicubic for super-resolution, the noisy or JPEG input itself), the
posterior **mean** (one network call, or the average of K samples), a posterior **sample**
(a sampler at some number of steps and stochasticity ``eta``), or the **perceptual** estimate
(one call of a perceptual stage's generator).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from condiff.diffusion import network_calls


@dataclass(frozen=True)
class Method:
    """One way to estimate the target: ``baseline``, ``mean``, ``sample`` or ``perceptual``."""

    estimate: str
    sampler: str = ""
    steps: int = 0
    num_samples: int = 1  # mean: average this many samples (1 = the one-call estimate)
    eta: float | None = None  # stochasticity; None = the run's sample.eta

    @property
    def label(self) -> str:
        if self.estimate in ("baseline", "perceptual"):
            return self.estimate
        if self.estimate == "mean" and self.num_samples == 1:
            return "mean"
        eta = "" if self.eta is None else f", eta {self.eta:g}"
        if self.estimate == "mean":
            return f"mean of {self.num_samples} ({self.sampler} {self.steps}{eta})"
        return f"sample ({self.sampler} {self.steps}{eta})"

    @property
    def nfe(self) -> int:
        """Network calls per image (per tile) to produce this estimate."""
        if self.estimate == "baseline":
            return 0
        if self.estimate == "perceptual" or (self.estimate == "mean" and self.num_samples == 1):
            return 1
        return self.num_samples * network_calls(self.sampler, self.steps)


def default_methods(
    samplers: list[str],
    steps_list: list[int],
    estimate: str = "both",
    mean_of: int = 1,
    etas: list[float | None] | None = None,
    perceptual: bool = False,
) -> list[Method]:
    """Baseline, then the one-call mean, the perceptual estimate (where the model has one), each
    (sampler, steps, eta) sample, and the mean of K. ``estimate``: "all" (= "both"), "mean",
    "sample" or "perceptual"."""
    methods = [Method("baseline")]
    if estimate in ("all", "both", "mean"):
        methods.append(Method("mean"))
    if perceptual and estimate in ("all", "both", "perceptual"):
        methods.append(Method("perceptual"))
    etas = etas or [None]
    if estimate in ("all", "both", "sample"):
        methods += [
            Method("sample", s, n, eta=e) for s in samplers for n in steps_list for e in etas
        ]
    if mean_of > 1:
        methods.append(Method("mean", samplers[0], steps_list[-1], mean_of, eta=etas[0]))
    return methods


def parse_sample_spec(text: str) -> Method:
    """``SAMPLER:STEPS[:ETA]`` (e.g. ``ddpm:100``, ``dpmpp_2m_sde:30:1``) -> a sample method."""
    from condiff.diffusion.samplers import SAMPLERS

    parts = text.split(":")
    try:
        if len(parts) not in (2, 3) or parts[0] not in SAMPLERS:
            raise ValueError
        steps = int(parts[1])
        eta = float(parts[2]) if len(parts) == 3 else None
        if steps < 1 or (eta is not None and eta < 0):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"--samples expects SAMPLER:STEPS[:ETA] with SAMPLER one of {sorted(SAMPLERS)}, "
            f"STEPS >= 1 and ETA >= 0, got {text!r}"
        ) from None
    return Method("sample", parts[0], steps, eta=eta)


def method_order(m: dict) -> tuple:
    """Sort key for report rows: baseline, then means, then samples, cheapest first."""
    rank = {"baseline": 0, "mean": 1, "perceptual": 2, "sample": 3}[str(m["estimate"])]
    return (rank, m["nfe"], m["method"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_method(
    pipe, method: Method, cond: Tensor, baseline: Callable[[Tensor], Tensor] | None, seed: int
) -> tuple[Tensor, Tensor | None, float]:
    """(estimate (C, H, W), per-pixel std over samples or None, seconds)."""
    if method.estimate == "baseline":
        assert baseline is not None
        return baseline(cond), None, 0.0
    gen = torch.Generator(pipe.device).manual_seed(seed)
    _sync(pipe.device)
    t0 = time.perf_counter()
    std = None
    if method.estimate == "mean" and method.num_samples > 1:
        s = pipe(
            cond[None],
            sampler=method.sampler,
            steps=method.steps,
            num_samples=method.num_samples,
            eta=method.eta,
            generator=gen,
        )[0]  # (K, C, H, W)
        out, std = s.mean(0), s.std(0, unbiased=False)
    else:
        out = pipe(
            cond[None],
            estimate=method.estimate,
            sampler=method.sampler or None,
            steps=method.steps or None,
            eta=method.eta,
            generator=gen,
        )[0]
    _sync(pipe.device)
    return out, std, time.perf_counter() - t0
