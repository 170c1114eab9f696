"""Schedules and whole sampling loops against diffusers' schedulers (test-only oracle)."""

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from condiff.diffusion import NoiseSchedule, get_sampler, make_denoiser  # noqa: E402

MU, STD = 0.2, 0.3


def gaussian_eps(schedule: NoiseSchedule, dtype=torch.float32):
    """The exact noise predictor for data ~ N(MU, STD^2) per pixel: E[eps | x_t]."""

    def model(x_concat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = schedule.alpha_bar(t).view(-1, 1, 1, 1).double()
        x = x_concat.double()
        return ((1 - a).sqrt() * (x - a.sqrt() * MU) / (a * STD**2 + 1 - a)).to(dtype)

    return model


@pytest.mark.parametrize(
    "kind,dkind", [("linear", "linear"), ("cosine", "squaredcos_cap_v2"), ("sigmoid", "sigmoid")]
)
@pytest.mark.parametrize("zsnr", [False, True])
def test_schedules_match_diffusers(kind, dkind, zsnr):
    ours = NoiseSchedule(kind, 1000, rescale_zero_terminal_snr=zsnr)
    ref = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=dkind, rescale_betas_zero_snr=zsnr
    )
    assert ours.betas.shape == (1000,)
    assert ours.alphas_cumprod.shape == (1000,)
    np.testing.assert_allclose(ours.betas.numpy(), ref.betas.double().numpy(), atol=1e-5, rtol=1e-5)
    ref_ab = ref.alphas_cumprod.double().numpy()
    if zsnr:
        ref_ab[-1] = 2.0**-24  # both libraries keep the terminal SNR tiny, not exactly zero
    np.testing.assert_allclose(ours.alphas_cumprod.numpy(), ref_ab, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("steps", [1, 7, 20, 50])
def test_timesteps_match_diffusers_ddim(spacing, steps):
    ours = NoiseSchedule("linear").timesteps(steps, spacing)
    ref = diffusers.DDIMScheduler(timestep_spacing=spacing, steps_offset=0)
    ref.set_timesteps(steps)
    assert ours.tolist() == ref.timesteps.tolist()


def _loop(ref, model, x, timesteps, step_kwargs=None, scale=False):
    for t in timesteps:
        inp = ref.scale_model_input(x, t) if scale else x
        eps = model(inp, torch.full((x.shape[0],), int(t)))
        x = ref.step(eps, t, x, **(step_kwargs or {})).prev_sample
    return x


def _ours(name, schedule, x_T, timesteps, **kw):
    denoise = make_denoiser(
        gaussian_eps(schedule), torch.zeros(x_T.shape[0], 0, *x_T.shape[2:]), schedule, clip=False
    )
    return get_sampler(name)(denoise, x_T, schedule, timesteps, **kw)


@pytest.mark.parametrize("kind,dkind", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_loop_matches_diffusers(kind, dkind, eta):
    sched = NoiseSchedule(kind)
    ref = diffusers.DDIMScheduler(
        beta_schedule=dkind, clip_sample=False, set_alpha_to_one=True, timestep_spacing="leading"
    )
    ref.set_timesteps(20)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = _ours(
        "ddim",
        sched,
        x_T,
        sched.timesteps(20, "leading"),
        eta=eta,
        generator=torch.Generator().manual_seed(1),
    )
    theirs = _loop(
        ref,
        gaussian_eps(sched),
        x_T.clone(),
        ref.timesteps,
        {
            "eta": eta,
            "use_clipped_model_output": True,
            "generator": torch.Generator().manual_seed(1),
        },
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("steps", [10, 50])
def test_ddpm_loop_matches_diffusers(steps):
    sched = NoiseSchedule("linear")
    ts = sched.timesteps(steps, "leading")
    ref = diffusers.DDPMScheduler(clip_sample=False)
    ref.set_timesteps(timesteps=ts.tolist())
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = _ours("ddpm", sched, x_T, ts, generator=torch.Generator().manual_seed(3))
    theirs = _loop(
        ref,
        gaussian_eps(sched),
        x_T.clone(),
        ref.timesteps,
        {"generator": torch.Generator().manual_seed(3)},
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kind,dkind,spacing",
    # cosine from t = T-1 (alpha_bar ~ 1e-9) is too ill-conditioned in diffusers' float32 to compare
    [
        ("linear", "linear", "trailing"),
        ("sigmoid", "sigmoid", "trailing"),
        ("cosine", "squaredcos_cap_v2", "leading"),
    ],
)
@pytest.mark.parametrize("steps", [5, 20])
def test_dpmpp_2m_loop_matches_diffusers(kind, dkind, spacing, steps):
    sched = NoiseSchedule(kind)
    ts = sched.timesteps(steps, spacing)
    ref = diffusers.DPMSolverMultistepScheduler(
        trained_betas=sched.betas.float().numpy(),
        algorithm_type="dpmsolver++",
        solver_order=2,
        final_sigmas_type="zero",
        lower_order_final=True,
    )
    ref.set_timesteps(timesteps=ts.tolist())
    # Run the oracle in float64 (its float32 log-SNR arithmetic alone drifts by ~3e-5).
    ab = sched.alphas_cumprod[ts]
    ref.sigmas = torch.cat([((1 - ab) / ab).sqrt(), torch.zeros(1, dtype=torch.float64)])
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = _ours("dpmpp_2m", sched, x_T, ts)
    theirs = _loop(ref, gaussian_eps(sched, torch.float64), x_T.double(), ref.timesteps).float()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "name,cls", [("euler", "EulerDiscreteScheduler"), ("heun", "HeunDiscreteScheduler")]
)
def test_euler_heun_loops_match_diffusers(name, cls):
    sched = NoiseSchedule("linear")
    ref = getattr(diffusers, cls)(
        beta_start=1e-4, beta_end=0.02, beta_schedule="linear", timestep_spacing="leading"
    )
    ref.set_timesteps(12)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = _ours(name, sched, x_T, sched.timesteps(12, "leading"))
    # diffusers starts from noise * init_noise_sigma in sigma space; ours from unit-variance x_T
    theirs = _loop(
        ref, gaussian_eps(sched), x_T.clone() * ref.init_noise_sigma, ref.timesteps, scale=True
    )
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
