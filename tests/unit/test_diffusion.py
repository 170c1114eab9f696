"""Diffusion math: analytic Gaussian oracle, objectives, reproducibility, argument errors."""

import pytest
import torch

from condiff import NoiseSchedule, diffusion_loss, sample
from condiff.diffusion import SAMPLERS, q_sample, target_for, to_x0

MU, STD = 0.2, 0.3


def exact_eps(schedule):
    """E[eps | x_t] for data ~ N(MU, STD^2) per pixel (closed form, ignores the condition)."""

    def model(x_concat, t):
        a = schedule.alpha_bar(t).view(-1, 1, 1, 1).double()
        x = x_concat[:, :1].double()
        return ((1 - a).sqrt() * (x - a.sqrt() * MU) / (a * STD**2 + 1 - a)).float()

    return model


def _gaussian_run(sampler, steps):
    sched = NoiseSchedule("linear")
    x = sample(
        exact_eps(sched),
        torch.zeros(4, 1, 64, 64),
        sched,
        target_channels=1,
        sampler=sampler,
        steps=steps,
        generator=torch.Generator().manual_seed(0),
        clip=False,
    )
    return x.mean().item(), x.std().item()


# Measured std errors (trailing spacing): ddim/euler first order (-0.026 at 50, -0.013 at 100,
# -0.006 at 200); dpmpp_2m -0.040 at 20, -0.004 at 50; heun -0.032 at 20, -0.006 at 50.
@pytest.mark.parametrize(
    "sampler,steps,tol",
    [
        ("ddpm", 1000, 0.01),
        ("ddim", 200, 0.01),
        ("euler", 200, 0.01),
        ("dpmpp_2m", 50, 0.01),
        ("heun", 50, 0.01),
        ("dpmpp_2m_sde", 50, 0.01),  # measured -0.004 (ddpm at 50 steps: -0.047)
        ("dpmpp_2m", 10, 0.15),
        ("heun", 10, 0.15),
    ],
)
def test_samplers_reproduce_gaussian_data(sampler, steps, tol):
    mean, std = _gaussian_run(sampler, steps)
    assert abs(mean - MU) < 0.01  # 16k pixels: Monte-Carlo error of the mean is ~0.0023
    assert abs(std - STD) < tol


@pytest.mark.parametrize("zero_snr", [False, True])
def test_ddim_with_eta_1_is_ddpm(zero_snr):
    """The same ancestral process: the same update and variance, the same noise draws."""
    sched = NoiseSchedule("linear", rescale_zero_terminal_snr=zero_snr)
    a, b = (
        sample(
            exact_eps(sched),
            torch.zeros(2, 1, 16, 16),
            sched,
            target_channels=1,
            sampler=name,
            steps=50,
            generator=torch.Generator().manual_seed(0),
            clip=False,
            **kw,
        )
        for name, kw in (("ddim", {"eta": 1.0}), ("ddpm", {}))
    )
    assert (a - b).abs().max() < 1e-5


def test_dpmpp_2m_sde_without_noise_is_dpmpp_2m():
    sched = NoiseSchedule("linear")
    runs = [
        sample(
            exact_eps(sched),
            torch.zeros(2, 1, 16, 16),
            sched,
            target_channels=1,
            sampler=name,
            steps=20,
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
        for name, kw in (("dpmpp_2m_sde", {"eta": 0.0}), ("dpmpp_2m", {}))
    ]
    assert (runs[0] - runs[1]).abs().max() < 1e-5
    noisy = sample(
        exact_eps(sched),
        torch.zeros(2, 1, 16, 16),
        sched,
        target_channels=1,
        sampler="dpmpp_2m_sde",
        steps=20,
        generator=torch.Generator().manual_seed(0),
    )
    assert (noisy - runs[1]).abs().max() > 0.05  # eta defaults to 1: fresh noise every step


@pytest.mark.parametrize("sampler,order", [("ddim", 1), ("dpmpp_2m", 2), ("heun", 2)])
def test_ode_samplers_converge_at_their_order(sampler, order):
    errs = [abs(_gaussian_run(sampler, n)[1] - STD) for n in (20, 50, 100)]
    assert errs[0] > errs[1] > 0 or errs[1] < 0.005
    # doubling the steps shrinks the error at least as fast as a first-order method would
    assert errs[2] < errs[1] * 0.6 or errs[2] < 0.005
    if order == 2:
        assert errs[1] < 0.01


@pytest.mark.parametrize("objective", ["eps", "v", "x0"])
def test_objective_round_trip(objective):
    sched = NoiseSchedule("cosine")
    x0, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    t = torch.tensor([1, 400, 990])
    ab = sched.alpha_bar(t)
    x_t = q_sample(x0, ab, eps)
    pred = target_for(objective, x0, eps, ab)
    torch.testing.assert_close(to_x0(objective, pred, x_t, ab), x0, atol=1e-4, rtol=1e-4)


def test_loss_is_zero_for_the_true_noise_and_weighting_changes_it():
    sched = NoiseSchedule("linear")
    x0, cond = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    eps, t = torch.randn(4, 1, 8, 8), torch.tensor([1, 10, 100, 999])
    loss = diffusion_loss(lambda x, tt: eps, x0, cond, sched, t=t, eps=eps)
    assert loss.shape == (4,) and torch.all(loss == 0)
    zero = lambda x, tt: torch.zeros_like(eps)  # noqa: E731
    uni = diffusion_loss(zero, x0, cond, sched, t=t, eps=eps)
    msnr = diffusion_loss(zero, x0, cond, sched, t=t, eps=eps, weighting="min_snr", snr_gamma=5.0)
    snr = sched.snr(t)
    torch.testing.assert_close(msnr, uni * snr.clamp(max=5.0) / snr)


def test_condition_is_concatenated_after_x_t_and_can_be_dropped():
    sched = NoiseSchedule("linear")
    x0, cond = torch.zeros(64, 1, 2, 2), torch.ones(64, 1, 2, 2)
    seen = {}

    def model(x, t):
        seen["x"] = x
        return torch.zeros_like(x[:, :1])

    diffusion_loss(model, x0, cond, sched, eps=torch.zeros_like(x0))
    assert (
        seen["x"].shape[1] == 2
        and torch.all(seen["x"][:, 1] == 1)
        and torch.all(seen["x"][:, 0] == 0)
    )
    diffusion_loss(
        model, x0, cond, sched, cond_drop_prob=0.5, generator=torch.Generator().manual_seed(0)
    )
    kept = seen["x"][:, 1].flatten(1).mean(1)
    assert 0 < (kept == 0).sum() < 64  # some conditions zeroed, not all


def test_ddim_eta0_is_bitwise_reproducible_and_generator_controls_noise():
    from condiff import ConditionalUNet

    torch.manual_seed(0)
    m = ConditionalUNet.from_preset("tiny").eval()
    sched = NoiseSchedule("linear")
    cond = torch.randn(2, 1, 16, 16)

    def run(sampler, seed, eta=0.0):
        return sample(
            m,
            cond,
            sched,
            target_channels=1,
            sampler=sampler,
            steps=5,
            eta=eta,
            generator=torch.Generator().manual_seed(seed),
        )

    assert torch.equal(run("ddim", 1), run("ddim", 1))
    assert torch.equal(run("ddpm", 1), run("ddpm", 1))
    assert not torch.equal(run("ddpm", 1), run("ddpm", 2))
    assert not torch.equal(run("ddim", 1, eta=1.0), run("ddim", 2, eta=1.0))


def test_sample_output_shape_and_dtype_follow_model():
    from condiff import ConditionalUNet

    m = ConditionalUNet.from_preset("tiny", in_img_channels=4, out_img_channels=3).eval()
    sched = NoiseSchedule("linear")
    for name in SAMPLERS:
        x = sample(m, torch.randn(2, 1, 16, 24), sched, target_channels=3, sampler=name, steps=3)
        assert x.shape == (2, 3, 16, 24) and x.dtype == torch.float32
        assert x.abs().max() <= 1.0 + 1e-6  # clipped x0 at the end
    calls = []
    wrapped = lambda x, t: calls.append(x.dtype) or m(x, t)  # noqa: E731
    sample(wrapped, torch.randn(1, 1, 16, 16), sched, target_channels=3, sampler="heun", steps=3)
    assert len(calls) == 5  # 2 * steps - 1 network calls


def test_dynamic_threshold_rescales_large_predictions():
    from condiff.diffusion.denoiser import dynamic_threshold

    x0 = torch.linspace(-3, 3, 100).view(1, 1, 10, 10)
    out = dynamic_threshold(x0, 0.9)
    assert out.abs().max() <= 1.0 and out.abs().max() > 0.99


def test_bad_arguments():
    sched = NoiseSchedule("linear", 100)
    model = lambda x, t: x[:, :1]  # noqa: E731
    cond = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(model, cond, sched, target_channels=1, sampler="plms")
    with pytest.raises(ValueError, match=r"steps must be in 1..100"):
        sample(model, cond, sched, target_channels=1, steps=101)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        NoiseSchedule("quadratic")
    with pytest.raises(ValueError, match="x_T has shape"):
        sample(model, cond, sched, target_channels=1, x_T=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="share batch"):
        diffusion_loss(model, torch.zeros(2, 1, 8, 8), torch.zeros(3, 1, 8, 8), sched)
    with pytest.raises(ValueError, match="unknown timestep spacing"):
        sched.timesteps(10, "random")


def test_min_snr_weight_keeps_the_zero_snr_step_and_clips_the_rest():
    import torch

    from condiff.diffusion.objectives import snr_weight

    snr = torch.tensor([0.0, 0.5, 5.0, 50.0])
    torch.testing.assert_close(
        snr_weight("v", snr, 5.0), torch.tensor([1.0, 0.5 / 1.5, 5 / 6, 5 / 51])
    )
    torch.testing.assert_close(snr_weight("eps", snr, 5.0), torch.tensor([1.0, 1.0, 1.0, 0.1]))
    torch.testing.assert_close(snr_weight("x0", snr, 5.0), torch.tensor([1.0, 0.5, 5.0, 5.0]))
