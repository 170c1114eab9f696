"""Typed configs: every shipped YAML loads; bad values name their field."""

from pathlib import Path

import pytest

from condiff.config import ConfigError, RunConfig, apply_overrides, load_config, save_config
from condiff.demo import demo_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_yaml_loads_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    out = tmp_path / "again.yaml"
    save_config(cfg, out)
    assert load_config(out) == cfg
    # the model fits its data's channel layout (task configs)
    if cfg.data.kind == "task":
        from condiff.data.tasks import make_task

        task = make_task(cfg.data.task)
        tc = task.target_channels(1 if cfg.data.color == "gray" else 3)
        assert cfg.model.out_img_channels == tc
        assert cfg.model.in_img_channels == tc + task.cond_channels(tc)


@pytest.mark.parametrize("device,name", [("cpu", "demo-cpu.yaml"), ("cuda", "demo-gpu.yaml")])
def test_demo_yaml_is_the_demo_config(device, name):
    path = Path(__file__).resolve().parents[2] / "configs" / name
    assert load_config(path) == demo_config(device)


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"train": {"lr": -1}}, "train.lr"),
        ({"train": {"steps": 0}}, "train.steps"),
        ({"train": {"batch_size": 10, "grad_accum": 3}}, "train.batch_size"),
        ({"data": {"task": {"factor": 3}}}, "data.task.factor"),
        ({"data": {"task": {"name": "deblur"}}}, "data.task.name"),
        ({"diffusion": {"objective": "score"}}, "diffusion.objective"),
        ({"sample": {"sampler": "plms"}}, "sample.sampler"),
        ({"model": {"preset": "huge"}}, "model.preset"),
        ({"model": {"base_channels": "wide"}}, "model.base_channels"),
        ({"train": {"lrr": 1.0}}, "train.lrr"),
        ({"data": {"crop_size": 4}}, "data.crop_size"),
        ({"train": {"attention": "flash"}}, "train.attention"),
        ({"data": {"task": {"sigma": 300}}}, "data.task.sigma"),
        ({"data": {"task": {"sigma": [40, 10]}}}, "data.task.sigma"),
        ({"data": {"task": {"quality": [5, 101]}}}, "data.task.quality"),
        ({"data": {"task": {"quality": 0}}}, "data.task.quality"),
        ({"sample": {"eta": -1}}, "sample.eta"),
        ({"train": {"max_minutes": 0}}, "train.max_minutes"),
        ({"train": {"budget_minutes": -5}}, "train.budget_minutes"),
        ({"train": {"lr": float("inf")}}, "train.lr"),
        ({"train": {"weight_decay": float("nan")}}, "train.weight_decay"),
        ({"model": {"preset": "small"}, "data": {"crop_size": 50}}, "data.crop_size"),
        ({"perceptual": {"feature_layers": [0, 0]}}, "perceptual.feature_layers"),
        ({"train": {"cuda_graphs": True, "compile": False}}, "train.cuda_graphs"),
    ],
)
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        RunConfig.from_dict(raw)


def test_overrides_and_yaml_number_forms(tmp_path):
    raw = apply_overrides(
        {"train": {"lr": 1.0}}, ["train.lr=1e-4", "data.task.factor=8", "model.preset=tiny"]
    )
    cfg = RunConfig.from_dict(raw)
    assert cfg.train.lr == 1e-4 and cfg.data.task.factor == 8
    assert cfg.model.base_channels == 16  # preset filled in
    with pytest.raises(ConfigError, match="section.field=value"):
        apply_overrides({}, ["train.lr"])
    # a preset override replaces a saved YAML's spelled-out model; later model.* still apply
    full = load_config(CONFIGS[0]).to_dict()
    cfg = RunConfig.from_dict(
        apply_overrides(full, ["model.preset=tiny", "model.out_img_channels=3"])
    )
    assert cfg.model.preset == "tiny" and cfg.model.base_channels == 16
    assert cfg.model.out_img_channels == 3
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    # a copy cut short inside its header comments holds no settings: refused, never defaults
    cut = tmp_path / "cut.yaml"
    text = next(p for p in CONFIGS if p.name == "denoise-gray.yaml").read_text()
    cut.write_text(text[: text.index("model:")])
    with pytest.raises(ConfigError, match=r"cut\.yaml: no settings .* model, diffusion, data"):
        load_config(cut, ["train.lr=1e-4"])


def test_the_budget_plan_arithmetic():
    """train.budget_minutes (condiff.train.budget): the steps the measured speed fits in what is
    left of the budget, less a 3% margin, between the current step and train.steps."""
    from condiff.train.budget import calibration_steps, planned_steps

    assert [calibration_steps(n) for n in (100_000, 70, 10)] == [50, 7, 3]
    plan = dict(step=50, configured=10**6, steps_per_s=10.0, seconds_used=6.0, budget_minutes=1.0)
    assert planned_steps(**plan) == 50 + 523  # floor(10 steps/s x 54 s x 0.97)
    assert planned_steps(**{**plan, "configured": 100}) == 100  # never above train.steps
    assert planned_steps(**{**plan, "seconds_used": 120.0}) == 50  # spent: stop here
