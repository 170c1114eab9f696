"""The posterior-mean estimate, residual scaling and top-timestep training, against closed forms."""

import numpy as np
import pytest
import torch

from condiff.config import DiffusionConfig, ModelConfig, RunConfig, SampleConfig
from condiff.diffusion import NoiseSchedule
from condiff.diffusion.objectives import decode_target, encode_target
from condiff.diffusion.samplers import estimate_plan
from condiff.infer.pipeline import Pipeline
from condiff.train.step import sample_timesteps

STD = 0.3  # per-pixel std of x0 | cond


def cond_mean(cond: torch.Tensor) -> torch.Tensor:
    """E[x0 | cond] of the oracle's data: a pixelwise function of the condition."""
    return 0.5 * cond - 0.1


def oracle_v(schedule: NoiseSchedule, *, residual: bool, scale: float):
    """E[v | x_t, cond] for x0 | cond ~ N(cond_mean(cond), STD^2) per pixel, in the diffused
    variable z = encode_target(x0) (closed form: Gaussian posterior)."""

    def model(x_concat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x_t, cond = x_concat[:, :1].double(), x_concat[:, 1:2].double()
        a = schedule.alpha_bar(t).view(-1, 1, 1, 1).double()
        mu = encode_target(cond_mean(cond), cond, residual=residual, scale=scale)
        var = (scale * STD) ** 2
        # E[z | x_t] for z ~ N(mu, var), x_t = sqrt(a) z + sqrt(1 - a) eps
        z_hat = mu + a.sqrt() * var / (a * var + 1 - a) * (x_t - a.sqrt() * mu)
        eps_hat = (x_t - a.sqrt() * z_hat) / (1 - a).sqrt()
        return (a.sqrt() * eps_hat - (1 - a).sqrt() * z_hat).float()

    return model


def _pipe(zero_snr: bool, residual: bool, scale: float) -> Pipeline:
    cfg = RunConfig(
        model=ModelConfig.from_preset("tiny"),
        diffusion=DiffusionConfig(
            objective="v",
            rescale_zero_terminal_snr=zero_snr,
            residual=residual,
            target_scale=scale,
        ),
        sample=SampleConfig(clip=False),
    )
    cfg.data.crop_size = 32
    sched = NoiseSchedule("linear", rescale_zero_terminal_snr=zero_snr)
    model = oracle_v(sched, residual=residual, scale=scale)
    return Pipeline(model, cfg, device=torch.device("cpu"))


@pytest.mark.parametrize("residual,scale", [(False, 1.0), (True, 4.0)])
def test_mean_estimate_is_the_conditional_mean_with_zero_terminal_snr(residual, scale):
    pipe = _pipe(True, residual, scale)
    cond = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    out = pipe(cond, estimate="mean", generator=torch.Generator().manual_seed(1))
    assert out.shape == cond.shape
    # exact up to the 2^-12 signal the stored terminal alpha_bar leaves in x_T
    assert (out - cond_mean(cond)).abs().max() < 2e-3


def test_mean_estimate_without_zero_terminal_snr_is_close_and_samples_are_not():
    pipe = _pipe(False, True, 4.0)
    cond = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    gen = torch.Generator().manual_seed(1)
    mean = pipe(cond, estimate="mean", generator=gen)
    # sqrt(alpha_bar_T) = 0.0064 of signal left: the estimate moves by ~ 0.0064 * STD^2 * |x_T|
    assert (mean - cond_mean(cond)).abs().max() < 0.015
    one = pipe(cond, estimate="sample", steps=20, generator=torch.Generator().manual_seed(2))
    dev = (one - cond_mean(cond)).std().item()
    assert 0.7 * STD < dev < 1.3 * STD  # a sample spreads like the posterior
    many = pipe(cond, estimate="mean", num_samples=16, steps=20, generator=gen)
    assert many.shape == cond.shape
    assert (many - cond_mean(cond)).std().item() < 0.4 * STD  # ~STD / 4 for 16 samples


def test_estimate_plan_and_bad_estimate():
    assert estimate_plan("mean", "dpmpp_2m", 20, "leading", 1) == ("ddim", 1, "trailing")
    assert estimate_plan("mean", "dpmpp_2m", 20, "leading", 4) == ("dpmpp_2m", 20, "leading")
    assert estimate_plan("sample", "heun", 10, "trailing", 1) == ("heun", 10, "trailing")
    with pytest.raises(ValueError, match="unknown estimate"):
        estimate_plan("median", "ddim", 1, "trailing", 1)


def test_target_encoding_round_trips_on_torch_and_numpy():
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (2, 3, 4, 4)).astype(np.float32)
    cond = rng.uniform(-1, 1, (2, 4, 4, 4)).astype(np.float32)  # extra channel (e.g. a mask)
    z = encode_target(x0, cond, residual=True, scale=4.0)
    np.testing.assert_allclose(z, 4 * (x0 - cond[:, :3]), rtol=1e-6)
    np.testing.assert_allclose(decode_target(z, cond, residual=True, scale=4.0), x0, atol=1e-6)
    t = encode_target(torch.from_numpy(x0), torch.from_numpy(cond), residual=False, scale=2.0)
    assert torch.allclose(t, 2 * torch.from_numpy(x0))


def test_top_t_fraction_moves_that_share_of_timesteps_to_the_top():
    gen = torch.Generator().manual_seed(0)
    t = sample_timesteps(20000, 1000, 0.25, torch.device("cpu"), gen)
    top = (t == 999).float().mean().item()
    assert abs(top - (0.25 + 0.75 / 1000)) < 0.01
    rest = t[t != 999].float()
    assert abs(rest.mean().item() - 499) < 10  # the others stay uniform on [0, 998]
    plain = sample_timesteps(20000, 1000, 0.0, torch.device("cpu"), gen)
    assert (plain == 999).float().mean().item() < 0.005


def test_guidance_extrapolates_from_the_dropped_condition_and_is_refused_without_it():
    from condiff.diffusion.denoiser import make_denoiser

    def model(x_concat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x_concat[:, 1:2] + 0.1  # x0 prediction: the condition plus a constant

    sched = NoiseSchedule("linear")
    cond = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    x_t, t = torch.randn(3, 1, 8, 8), torch.full((3,), 500)
    for w in (0.0, 0.5, 2.0):
        den = make_denoiser(model, cond, sched, objective="x0", clip=False, guidance=w)
        # (1 + w) * (cond + 0.1) - w * (0 + 0.1)
        torch.testing.assert_close(den(x_t, t), (1 + w) * cond + 0.1)
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        make_denoiser(model, cond, sched, guidance=-1.0)

    pipe = _pipe(True, False, 1.0)
    c = torch.rand(1, 1, 32, 32) * 1.6 - 0.8
    with pytest.raises(ValueError, match="cond_drop_prob"):
        pipe(c, estimate="sample", steps=4, guidance=1.0)
    pipe.cfg.diffusion.cond_drop_prob = 0.1
    g = torch.Generator().manual_seed(3)
    plain = pipe(c, estimate="sample", steps=4, generator=g.manual_seed(3))
    same = pipe(c, estimate="sample", steps=4, guidance=0.0, generator=g.manual_seed(3))
    guided = pipe(c, estimate="sample", steps=4, guidance=1.0, generator=g.manual_seed(3))
    torch.testing.assert_close(plain, same)
    assert (guided - plain).abs().max() > 1e-3
