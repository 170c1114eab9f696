"""The perceptual stage on the tiny config: a GAN fine-tune from a diffusion run that trains,
resumes bit for bit, carries the diffusion weights along and serves the perceptual estimate."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from condiff import checkpoint as ckpt
from condiff.config import ConfigError, RunConfig
from condiff.evaluate.perceptual import FILES, cache_dir
from condiff.train import fit
from tests.conftest import run_cli, tiny_config, write_yaml

pytestmark = pytest.mark.skipif(
    not (cache_dir() / FILES["vgg16"]).is_file(),
    reason="VGG16 weights not set up (condiff metrics setup)",
)


# the SR recipe's diffusion settings: v on the scaled residual, zero terminal SNR
V_RESIDUAL = {
    "objective": "v",
    "rescale_zero_terminal_snr": True,
    "residual": True,
    "target_scale": 4.0,
    "top_t_fraction": 0.2,
}


@pytest.fixture(scope="module")
def v_run(tmp_path_factory) -> Path:
    """A tiny v-objective diffusion run (the stage needs v or x0) to start the stage from."""
    root = tmp_path_factory.mktemp("v_run")
    fit(RunConfig.from_dict(tiny_config(root, diffusion=V_RESIDUAL)), progress=False)
    return root


def stage_dict(out: Path, init: Path, steps: int = 8, **perceptual) -> dict:
    return tiny_config(
        out,
        diffusion=V_RESIDUAL,
        train={"steps": steps, "init_from": str(init), "lr": 1e-4, "warmup_steps": 0},
        perceptual={
            "enabled": True,
            "feature_layers": [0.1, 0.1, 1.0],
            "disc_channels": 8,
            **perceptual,
        },
    )


def stage_cfg(out: Path, init: Path, steps: int = 8) -> RunConfig:
    return RunConfig.from_dict(stage_dict(out, init, steps))


def last(run: Path) -> Path:
    return ckpt.list_checkpoints(run / "checkpoints")[-1]


def test_stage_trains_resumes_exactly_and_keeps_the_diffusion_weights(v_run, tmp_path):
    full = fit(stage_cfg(tmp_path / "full", v_run), progress=False)
    part = fit(stage_cfg(tmp_path / "part", v_run), stop_after=3, progress=False)
    assert part.interrupted and part.step == 3
    done = fit(stage_cfg(tmp_path / "part", v_run), resume="auto", progress=False)
    assert full.step == done.step == 8
    a, b = last(tmp_path / "full"), last(tmp_path / "part")
    for f in ("generator", "perceptual", "discriminator"):
        wa, wb = load_file(str(a / f"{f}.safetensors")), load_file(str(b / f"{f}.safetensors"))
        assert wa.keys() == wb.keys()
        assert all(torch.equal(wa[k], wb[k]) for k in wa), f"{f} differs after resume"
    sa, sb = ckpt.read_state(a), ckpt.read_state(b)
    assert sa["lr_schedule"] == sb["lr_schedule"]
    assert sa["disc_optimizer"]["state"].keys() == sb["disc_optimizer"]["state"].keys()
    # the diffusion weights ride along untouched; the generator moved away from them
    src = ckpt.list_checkpoints(v_run / "checkpoints")[-1]
    for f in ("model", "ema"):
        theirs, ours = (
            load_file(str(src / f"{f}.safetensors")),
            load_file(str(a / f"{f}.safetensors")),
        )
        assert all(torch.equal(theirs[k], ours[k]) for k in theirs)
    gen, ema = load_file(str(a / "generator.safetensors")), load_file(str(src / "ema.safetensors"))
    assert any(not torch.equal(gen[k], ema[k]) for k in gen)
    # the loss terms are logged
    hist = [h for h in full.history if "loss" in h]
    assert hist and all(h["loss"] == h["loss"] for h in hist)


def test_a_stage_step_reads_two_values_on_the_host(v_run, tmp_path, monkeypatch):
    """The generator's and the discriminator's finiteness, one host read each per step; the loss
    terms stay on the device until the log window reads them (a float() per term per step made
    the GPU wait on the host five more times a step)."""
    from tests.conftest import host_reads_per_step

    per_step = host_reads_per_step(monkeypatch, lambda n: stage_dict(tmp_path / f"s{n}", v_run))
    assert per_step == 2


def test_stage_needs_init_from_and_a_v_or_x0_network(tmp_path):
    cfg = tiny_config(tmp_path / "r", diffusion=V_RESIDUAL, perceptual={"enabled": True})
    with pytest.raises(ValueError, match="perceptual.enabled needs train.init_from"):
        fit(RunConfig.from_dict(cfg), progress=False)
    cfg = tiny_config(tmp_path / "r", perceptual={"enabled": True})
    with pytest.raises(ValueError, match="needs diffusion.objective v or x0"):
        fit(RunConfig.from_dict(cfg), progress=False)
    with pytest.raises(ConfigError, match="perceptual.feature_layers"):
        RunConfig.from_dict(tiny_config(tmp_path / "r", perceptual={"feature_layers": []}))


@pytest.fixture(scope="module")
def stage_run(v_run, tmp_path_factory) -> tuple[Path, str]:
    """A 4-step perceptual stage trained through the real CLI (its stdout beside it)."""
    root = tmp_path_factory.mktemp("stage")
    cfg = stage_dict(root / "p", v_run, steps=4, feature_layers=[0.1, 0.1])
    cfg["train"]["val_every"] = 4
    p = run_cli("train", "--config", str(write_yaml(root / "p.yaml", cfg)), "--no-progress")
    return root / "p", p.stdout


def test_cli_trains_the_stage_and_every_estimate_runs(stage_run, tiny_run):
    import condiff

    run, stdout = stage_run
    assert "perceptual stage: generator initialised from" in stdout
    assert "validation at step 4: perceptual_psnr" in stdout
    assert " gan " in stdout and " disc " in stdout  # the loss terms in the log lines
    pipe = condiff.load(run, device="cpu")
    assert pipe.estimates == ("sample", "mean", "perceptual")
    cond = torch.rand(1, 1, 24, 40) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    outs = {e: pipe(cond, estimate=e, steps=2, generator=gen) for e in pipe.estimates}
    assert all(o.shape == (1, 1, 24, 40) and torch.isfinite(o).all() for o in outs.values())
    assert not torch.equal(outs["perceptual"], outs["mean"])
    # a run without the stage refuses the estimate, naming what it has
    with pytest.raises(ValueError, match="no perceptual estimate"):
        condiff.load(tiny_run, device="cpu")(cond, estimate="perceptual")


def test_export_and_server_give_the_perceptual_estimate(stage_run, tmp_path):
    import condiff
    from condiff.export.runtime import OrtPipeline
    from condiff.serve.engine import OptionError, Options, Translator

    run, _ = stage_run
    cond = torch.rand(1, 1, 24, 40) * 2 - 1
    x_T = torch.randn(1, 1, 24, 40, generator=torch.Generator().manual_seed(3))
    want = condiff.load(run, device="cpu")(cond, estimate="perceptual", noise=x_T)
    # ONNX: the generator exported on its own answers the perceptual estimate, and only it
    onnx = tmp_path / "perc.onnx"
    p = run_cli(
        "export", "--checkpoint", str(run), "--output", str(onnx), "--network", "perceptual"
    )
    assert "relative error" in p.stdout
    ort = OrtPipeline(onnx)
    got = ort(cond.numpy(), estimate="perceptual", noise=x_T.numpy())
    assert np.abs(got - want.numpy()).max() < 1e-4
    with pytest.raises(ValueError, match="holds the perceptual network"):
        ort(cond.numpy(), estimate="mean")
    # the server: the model lists the estimate, a request for it equals the pipeline's output
    t = Translator(run, device="cpu")
    assert "perceptual" in t.describe()["estimates"]
    from PIL import Image

    img = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((24, 40)) * 255).astype(np.uint8)).save(img)
    job = t.prepare(img.read_bytes(), Options(estimate="perceptual", seed=3))
    res = t.run([job])[0]
    assert set(res.outputs) == {"perceptual"} and res.nfe == 1
    every = t.run([t.prepare(img.read_bytes(), Options(estimate="all", steps=2))])[0]
    assert {"mean", "perceptual", "sample", "baseline"} <= set(every.outputs)
    plain = Translator(run, device="cpu")
    plain.estimates = ("sample", "mean")  # as a run without the stage describes itself
    with pytest.raises(OptionError, match="this model gives"):
        plain.prepare(img.read_bytes(), Options(estimate="perceptual"))
