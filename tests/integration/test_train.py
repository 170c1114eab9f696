"""Training on real image files: loss falls, resume is exact, errors are clear, checkpoints whole."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from condiff import checkpoint as ckpt
from condiff.config import RunConfig
from condiff.train import TrainingDiverged, fit
from tests.conftest import REPO, run_cli, small_disk, tiny_config, write_yaml


def cfg_of(out: Path, **sections) -> RunConfig:
    return RunConfig.from_dict(tiny_config(out, **sections))


def weights(run: Path, which: str = "model") -> dict[str, torch.Tensor]:
    last = ckpt.list_checkpoints(run / "checkpoints")[-1]
    return load_file(str(last / f"{which}.safetensors"))


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert diff == [], f"{len(diff)} tensors differ, e.g. {diff[:3]}"


def test_loss_goes_down(tmp_path):
    res = fit(
        cfg_of(tmp_path / "r", train={"steps": 100, "log_every": 10, "lr": 2e-3}), progress=False
    )
    losses = [h["loss"] for h in res.history if "loss" in h]
    assert len(losses) == 10
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:2]) / 2
    # run folder: resolved config, TensorBoard event file, whole checkpoint
    assert (tmp_path / "r" / "config.yaml").is_file()
    assert list((tmp_path / "r" / "tb").glob("events.out.tfevents.*"))
    ckpt.validate_checkpoint(res.checkpoint)


def test_tensorboard_has_scalars_and_images(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tiny_run / "tb"))
    acc.Reload()
    tags = acc.Tags()
    for tag in (
        "train/loss",
        "train/lr",
        "train/grad_norm",
        "train/img_per_s",
        "train/skipped_steps",
        "val/mean_psnr",
        "val/mean_ssim",
        "val/sample_psnr",
        "val/sample_ssim",
        "val/baseline_psnr",
    ):
        assert tag in tags["scalars"], tag
    assert "val/cond|mean|sample|target" in tags["images"]
    # the same records as JSON lines, and a plain line per log window (stdout is not a tty)
    import json

    recs = [json.loads(x) for x in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(5, 61, 5))
    assert all(r["img_per_s"] > 0 and r["loss"] > 0 for r in train)
    val = [r for r in recs if r["kind"] == "val"]
    assert val and val[-1]["step"] == 60 and "mean_psnr" in val[-1]
    # the start-up, once, after the first step: each phase's seconds, in order
    (up,) = [r for r in recs if r["kind"] == "startup"]
    phases = ["data", "model", "weights", "wrap", "loader", "first step"]
    assert up["step"] == 1 and [k for k in up if k in phases] == phases
    assert all(up[k] >= 0 for k in phases) and up["first step"] > 0 and up["imports"] > 0


@pytest.mark.parametrize("fused", [False, True], ids=["read-each-step", "decided-on-device"])
def test_resume_is_bit_identical(tmp_path, fused):
    """Also with fused AdamW, whose steps are decided on the device and read a step later."""
    train = {"steps": 24, "fused_adamw": fused}
    full = fit(cfg_of(tmp_path / "full", train=train), progress=False)
    part = fit(cfg_of(tmp_path / "part", train=train), stop_after=10, progress=False)
    assert part.interrupted and part.step == 10
    done = fit(cfg_of(tmp_path / "part", train=train), resume="auto", progress=False)
    assert done.step == 24 and full.step == 24
    assert_same(weights(tmp_path / "full"), weights(tmp_path / "part"))
    assert_same(weights(tmp_path / "full", "ema"), weights(tmp_path / "part", "ema"))
    full_state = ckpt.read_state(ckpt.list_checkpoints(tmp_path / "full" / "checkpoints")[-1])
    part_state = ckpt.read_state(ckpt.list_checkpoints(tmp_path / "part" / "checkpoints")[-1])
    assert full_state["lr_schedule"] == part_state["lr_schedule"]


def test_sigterm_saves_and_cli_resume_is_exact(tmp_path):
    steps = 160  # the signal lands 2 s after the first log line: some 20-60 steps in
    overrides = [
        f"train.steps={steps}",
        "train.log_every=1",
        "train.ckpt_every=100000",
        "train.batch_size=16",
    ]
    cfg_a = write_yaml(tmp_path / "a.yaml", tiny_config(tmp_path / "a"))
    cfg_b = write_yaml(tmp_path / "b.yaml", tiny_config(tmp_path / "b"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "condiff.cli",
            "train",
            "--config",
            str(cfg_b),
            "--no-progress",
            *overrides,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while not list((tmp_path / "b" / "tb").glob("events.*")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(2.0)  # let it take some steps
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 75, out  # stopped early, checkpoint saved: run again
    assert "interrupted (SIGTERM) at step" in out and "Traceback" not in out
    saved = ckpt.list_checkpoints(tmp_path / "b" / "checkpoints")
    assert len(saved) == 1
    stopped_at = int(saved[0].name.split("_")[1])
    assert 0 < stopped_at < steps, out
    run_cli("train", "--config", str(cfg_b), "--resume", "auto", "--no-progress", *overrides)
    run_cli("train", "--config", str(cfg_a), "--no-progress", *overrides)
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))


def test_interrupted_and_truncated_checkpoints_are_never_loaded(tmp_path):
    run = tmp_path / "r"
    fit(cfg_of(run, train={"steps": 10, "ckpt_every": 5}), progress=False)
    root = run / "checkpoints"
    good = ckpt.list_checkpoints(root)
    assert [p.name for p in good] == ["step_000000005", "step_000000010"]
    # a write interrupted before the rename leaves only a temporary folder
    tmp = root / ".tmp-step_000000015-999"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(root) == good[-1]
    # a damaged newest checkpoint is skipped, and named when asked for directly
    f = good[-1] / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.warns(UserWarning, match="skipping damaged checkpoint"):
        assert ckpt.latest_checkpoint(root) == good[0]
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        ckpt.validate_checkpoint(good[-1])
    from condiff import load

    with pytest.raises(ckpt.CheckpointError, match="model.safetensors"):
        load(good[-1], device="cpu")
    (good[0] / "config.json").unlink()
    with pytest.raises(ckpt.CheckpointError, match="config.json"):
        load(good[0], device="cpu")


def test_full_disk_keeps_earlier_checkpoints(tmp_path):
    with small_disk(tmp_path / "small", "600k") as mnt:
        from condiff.nn import ConditionalUNet

        tiny = ConditionalUNet.from_preset("tiny")  # ~600 KB of float32 weights per file
        ckpt.save_checkpoint(
            mnt,
            1,
            config=RunConfig().to_dict(),
            model=torch.nn.Linear(2, 2),
            ema=torch.nn.Linear(2, 2),
            state={"step": 1},
        )
        with pytest.raises(ckpt.CheckpointError, match="disk is full"):
            ckpt.save_checkpoint(
                mnt, 2, config=RunConfig().to_dict(), model=tiny, ema=tiny, state={"step": 2}
            )
        assert [p.name for p in ckpt.list_checkpoints(mnt)] == ["step_000000001"]
        assert not [p for p in mnt.iterdir() if p.name.startswith(".tmp")]
        ckpt.validate_checkpoint(mnt / "step_000000001")


@pytest.mark.parametrize("fused", [False, True], ids=["read-each-step", "decided-on-device"])
def test_nonfinite_losses_stop_the_run_and_keep_the_last_good_checkpoint(tmp_path, fused):
    good = cfg_of(
        tmp_path / "r",
        train={"steps": 200, "ckpt_every": 5, "max_nonfinite": 3, "fused_adamw": fused},
    )
    fit(good, stop_after=5, progress=False)
    # resume with an absurd learning rate (the config's lr applies on resume): weights overflow
    bad = cfg_of(
        tmp_path / "r",
        train={
            "fused_adamw": fused,
            "steps": 200,
            "ckpt_every": 5,
            "max_nonfinite": 3,
            "lr": 1e30,
            "warmup_steps": 0,
            "grad_clip": 0.0,
        },
    )
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite") as e:
        fit(bad, resume="auto", progress=False)
    assert "step_000000005" in str(e.value)
    # it says where the first skipped step went wrong, and only the levers not already pulled
    msg = str(e.value)
    assert "non-finite gradient in" in msg or ": the forward pass" in msg, msg
    if "non-finite gradient in" in msg:
        assert "values: " in msg, msg
    assert "train.lr (now 1e+30)" in msg and "train.grad_clip=1.0" in msg
    assert "precision=bf16" not in msg  # fp32 on this CPU: no fp16 to leave
    last = ckpt.latest_checkpoint(tmp_path / "r" / "checkpoints")
    assert last is not None and last.name == "step_000000005"
    assert all(torch.isfinite(v).all() for v in load_file(str(last / "ema.safetensors")).values())


def test_a_skipped_step_names_where_its_gradient_went_non_finite():
    """The first and last non-finite parameters in definition order (the last: where a NaN in
    the backward arose, as it reaches every layer before it), and the counts."""
    from condiff.train.step import nonfinite_grads, nonfinite_kind

    net = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(5)])  # 10 parameters
    for i, p in enumerate(net.parameters()):
        p.grad = torch.full_like(p, float("nan") if i < 7 else 0.0)
    net[4].bias.grad = None  # no gradient: not counted
    names, bad, total = nonfinite_grads(net)
    assert (bad, total) == (7, 9)
    assert names == ["0.weight", "0.bias", "...", "2.bias", "3.weight"]
    net[0].weight.grad[0, 0] = float("inf")
    for p in list(net.parameters())[1:7]:
        p.grad.zero_()
    assert nonfinite_grads(net) == (["0.weight"], 1, 9)
    assert nonfinite_kind(net) == "NaN and inf"  # 0.weight: NaN around one inf
    net[0].weight.grad.zero_()
    net[0].weight.grad[0, 0] = float("inf")
    assert nonfinite_kind(net) == "inf"
    net[0].weight.grad.zero_()
    net[3].weight.grad[0, 0] = float("nan")
    assert nonfinite_kind(net) == "NaN"
    net[3].weight.grad.zero_()
    assert nonfinite_kind(net) == "none"


def test_a_nan_born_mid_backward_is_named_where_it_arose_not_smeared_by_clipping(tmp_path):
    """A NaN born in one block's backward reaches that block and every layer before it, never
    the layers after it; clipping by the (NaN) norm must not spread it to all of them, so the
    skipped step's log line can name where it arose. A finite step is clipped as before."""
    from types import SimpleNamespace

    from condiff.train.setup import build_model, make_optimizer
    from condiff.train.step import nonfinite_grads, update

    cfg = cfg_of(tmp_path / "r", train={"grad_clip": 1.0})
    model = build_model(cfg)
    opt, sched = make_optimizer(cfg, model, False)
    ema = SimpleNamespace(update=lambda *a: None)
    tr = SimpleNamespace(cfg=cfg, model=model, opt=opt, lr_sched=sched, scaler=None, ema=ema)
    mid = model.bottleneck_attn  # the NaN is born in the backward to its input
    c = cfg.model
    x = torch.randn(2, c.in_img_channels, 16, 16)
    t = torch.tensor([3, 7])

    def backward(poison: bool) -> None:
        opt.zero_grad(set_to_none=True)
        hook = mid.register_full_backward_hook(
            lambda m, gin, gout: tuple(g * float("nan") for g in gin) if poison else None
        )
        (model(x, t).square().mean() * 1e4).backward()  # a norm far above the clip of 1.0
        hook.remove()

    backward(poison=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    norm, finite = update(tr, 0)
    assert not finite and not torch.isfinite(norm)
    bad_names, bad, total = nonfinite_grads(model, limit=1)
    assert 0 < bad < total, (bad, total)  # not all of them: the layers after the block are clean
    assert bad_names[0] == "time_mlp.0.weight"  # the time embedding feeds the poisoned path
    assert bad_names[-1].startswith("bottleneck_res1."), bad_names  # the layer just before it
    assert torch.isfinite(model.conv_out.weight.grad).all()
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # no update

    backward(poison=False)
    ref = [p.grad.clone() for p in model.parameters()]
    want = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # clips in place...
    for p, g in zip(model.parameters(), ref, strict=True):  # ...so put the raw gradient back
        p.grad.copy_(g)
    norm, finite = update(tr, 1)
    assert finite and torch.allclose(norm, want) and float(norm) > 1.0
    total_after = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(p.grad) for p in model.parameters()])
    )
    assert abs(float(total_after) - 1.0) < 1e-3  # clipped to the configured norm


def test_cli_reports_bad_data_clearly(tmp_path):
    from PIL import Image

    root = tmp_path / "pairs"
    (root / "cond").mkdir(parents=True)
    (root / "target").mkdir()
    for n in ("a", "b"):
        Image.new("L", (32, 32), 100).save(root / "target" / f"{n}.png")
        Image.new("RGB", (32, 32), (1, 2, 3)).save(root / "cond" / f"{n}.png")
    cfg = write_yaml(
        tmp_path / "c.yaml",
        tiny_config(tmp_path / "run", data={"kind": "paired", "root": str(root), "val_count": 1}),
    )
    p = run_cli("train", "--config", str(cfg), "--no-progress", check=False)
    assert p.returncode == 2 and "model.in_img_channels=4" in p.stderr
    (root / "cond" / "b.png").write_bytes(b"not an image")
    p = run_cli("train", "--config", str(cfg), "--no-progress", check=False)
    assert p.returncode == 2 and "b.png" in p.stderr and "corrupt" in p.stderr
    (root / "cond" / "b.png").unlink()
    p = run_cli("train", "--config", str(cfg), "--no-progress", check=False)
    assert p.returncode == 2 and "missing pair" in p.stderr and "b.png" in p.stderr
    p = run_cli("train", "--config", str(cfg), "--no-progress", "train.lr=-3", check=False)
    assert p.returncode == 2 and "train.lr" in p.stderr


def test_init_from_loads_weights_and_ema_with_a_fresh_optimizer(tiny_run, tmp_path):
    from condiff.train.ema import EMA
    from condiff.train.setup import build_model, init_weights

    cfg = cfg_of(tmp_path / "ft", train={"init_from": str(tiny_run), "steps": 3})
    model = build_model(cfg)
    ema = EMA(model, 0.9)
    src = init_weights(cfg, model, ema)
    assert src.parent.parent == tiny_run
    assert_same({k: v for k, v in model.state_dict().items()}, weights(tiny_run, "model"))
    assert_same({k: v for k, v in ema.model.state_dict().items()}, weights(tiny_run, "ema"))
    res = fit(cfg, progress=False)
    assert res.step == 3  # counted from 0, not from the source run's step
    state = ckpt.read_state(ckpt.latest_checkpoint(tmp_path / "ft" / "checkpoints"))
    assert state["step"] == 3 and len(state["optimizer"]["state"]) > 0
    # another network shape: a clear error naming the field, before any training
    bad = cfg_of(tmp_path / "bad", model={"preset": "tiny", "base_channels": 8})
    bad.train.init_from = str(tiny_run)
    with pytest.raises(ValueError, match=r"model\.base_channels is 8 here but 16 there"):
        fit(bad, progress=False)
    assert not (tmp_path / "bad" / "checkpoints").exists()
    p = run_cli(
        "train",
        "--config",
        str(write_yaml(tmp_path / "c.yaml", tiny_config(tmp_path / "cli"))),
        "--no-progress",
        "train.steps=2",
        "train.init_from=pretrained:nope",
        check=False,
    )
    assert p.returncode == 2 and "no pretrained weights named 'nope'" in p.stderr


def test_colour_sr_config_trains_a_tiny_rgb_model_and_samples_it(tmp_path):
    """configs/sr4-rgb.yaml (seed-rgb480 recipe) through the same CLI path, shrunk to the tiny
    preset with RGB channels: train a few steps, sample an RGB image, score it as the field does."""
    import numpy as np
    from PIL import Image

    data = tmp_path / "rgb"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
    run = tmp_path / "run"
    config = str(REPO / "configs" / "sr4-rgb.yaml")
    over = [
        "model.preset=tiny",
        "model.in_img_channels=6",
        "model.out_img_channels=3",
        f"data.root={data}",
        "data.crop_size=16",
        "data.val_count=1",
        "data.num_workers=0",
        f"train.output_dir={run}",
        "train.steps=4",
        "train.batch_size=4",
        "train.warmup_steps=1",
        "train.log_every=2",
        "train.val_every=4",
        "train.ckpt_every=4",
        "train.val_steps=2",
    ]
    p = run_cli("train", "--config", config, "--no-progress", *over)
    assert "done: step 4" in p.stdout
    raw = ckpt.read_config(ckpt.latest_checkpoint(run / "checkpoints"))
    raw.pop("checkpoint")
    saved = RunConfig.from_dict(raw)
    assert saved.data.color == "rgb" and saved.diffusion.target_scale == 4.0
    assert (saved.model.in_img_channels, saved.model.out_img_channels) == (6, 3)
    out = tmp_path / "out"
    run_cli(
        "sample",
        "--checkpoint",
        str(run),
        "--input",
        str(data / "0.png"),
        "--output",
        str(out),
        "--steps",
        "2",
        "--no-progress",
    )
    img = Image.open(out / "0.png")
    assert img.mode == "RGB" and img.size == (48, 40)
    p = run_cli(
        "evaluate",
        "--checkpoint",
        str(run),
        "--protocol",
        "sr",
        "--images",
        str(data),
        "--steps-list",
        "2",
        "--output",
        str(tmp_path / "rep"),
        "--no-progress",
    )
    assert "Colour (RGB PSNR" in p.stdout and "Cb " in p.stdout


def test_resume_housekeeping_stale_saves_replayed_records_and_fresh_starts(tmp_path, capsys):
    import json

    from condiff.train.log import RunLog

    run = tmp_path / "r"
    (run / "checkpoints" / ".tmp-step_000000004-123").mkdir(parents=True)
    # records past the step a run resumes from (written after its checkpoint) are dropped
    lines = [json.dumps({"kind": "train", "step": s, "loss": 1.0}) for s in range(1, 9)]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    RunLog(run, start_step=5, total=10, batch_size=1, progress=False).close()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    (run / "metrics.jsonl").unlink()
    res = fit(cfg_of(run, train={"steps": 2}), resume="auto", progress=False)
    out = capsys.readouterr().out
    assert "--resume auto: no checkpoint in" in out and "starting from scratch" in out
    assert "removed .tmp-step_000000004-123" in out
    assert not list((run / "checkpoints").glob(".tmp-*")) and res.step == 2
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["kind"], r["step"]) for r in recs]
    assert keys and len(keys) == len(set(keys))


def test_nan_weights_are_never_checkpointed_nor_sampled_into_a_black_image(tiny_run, tmp_path):
    import shutil

    from safetensors.torch import save_file

    from condiff.config import RunConfig as RC

    bad = torch.nn.Linear(2, 2)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(ckpt.CheckpointError, match="hold NaN or Inf"):
        ckpt.save_checkpoint(
            tmp_path / "c", 1, config=RC().to_dict(), model=bad, ema=bad, state={"step": 1}
        )
    assert not list((tmp_path / "c").iterdir())  # no checkpoint, no temporary folder
    # a checkpoint damaged on disk to hold NaN: `condiff sample` refuses, writes nothing, exit 2
    ck = tmp_path / "ck"
    shutil.copytree(ckpt.list_checkpoints(tiny_run / "checkpoints")[-1], ck)
    w = load_file(str(ck / "ema.safetensors"))
    w = {k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in w.items()}
    save_file(w, str(ck / "ema.safetensors"))
    # the manifest vouches for the NaN weights (as if written so), so the output check acts
    ckpt.write_manifest(ck, [f.name for f in ck.iterdir() if f.name != ckpt.MANIFEST])
    img = tmp_path / "in.png"
    from PIL import Image

    Image.new("L", (20, 20), 128).save(img)
    p = run_cli("sample", "--checkpoint", str(ck), "--input", str(img), "--output",
                str(tmp_path / "out"), "--steps", "2", "--no-progress", check=False)  # fmt: skip
    assert (
        p.returncode == 2 and "NaN/Inf values; nothing written" in p.stderr and "in.png" in p.stderr
    )
    assert not list((tmp_path / "out").glob("*.png"))  # (a missing folder globs to nothing)


def test_budget_minutes_cuts_the_steps_and_a_resumed_call_keeps_the_plan(tmp_path):
    """train.budget_minutes plans after timing the first steps (inside the warm-up here) and
    keeps the plan in every checkpoint. Speed-free: a budget spent by the timing itself ends the
    run at step 50; one far above the configured steps keeps them, and that run, interrupted and
    resumed, equals a plain run bit for bit (the arithmetic: tests/unit/test_config.py)."""
    import json

    def plans(run: Path) -> list[dict]:
        recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r for r in recs if r["kind"] == "budget"]

    train = {"steps": 100_000, "warmup_steps": 51, "lr_schedule": "cosine", "log_every": 10}
    train["budget_minutes"] = 1e-4
    spent = fit(cfg_of(tmp_path / "spent", train=train), progress=False)
    assert spent.step == 50 and not spent.interrupted
    assert ckpt.read_state(spent.checkpoint)["planned_steps"] == 50
    assert ckpt.read_config(spent.checkpoint)["train"]["steps"] == 50
    assert [(r["step"], r["planned_steps"]) for r in plans(tmp_path / "spent")] == [(50, 50)]

    train = {**train, "steps": 70, "budget_minutes": 600.0}
    part = fit(cfg_of(tmp_path / "b", train=train), stop_after=60, progress=False)
    assert part.interrupted and ckpt.read_state(part.checkpoint)["planned_steps"] == 70
    done = fit(cfg_of(tmp_path / "b", train=train), resume="auto", progress=False)
    assert done.step == 70 and not done.interrupted
    assert len(plans(tmp_path / "b")) == 1  # the resumed call kept the plan
    final = ckpt.read_state(done.checkpoint)
    assert final["lr_schedule"]["_last_lr"][0] == pytest.approx(0.0, abs=1e-12)  # cosine ended
    fit(cfg_of(tmp_path / "p", train={**train, "budget_minutes": None}), progress=False)
    assert_same(weights(tmp_path / "b"), weights(tmp_path / "p"))
    assert_same(weights(tmp_path / "b", "ema"), weights(tmp_path / "p", "ema"))


def test_a_training_step_reads_one_value_on_the_host(tmp_path, monkeypatch):
    """One host read per step (the gradient's finiteness, which decides the update); the loss is
    summed on the device and read once per log window. A second read per step (float(loss) after
    the optimizer step and EMA were queued) made a small model's GPU step wait on the host."""
    from tests.conftest import host_reads_per_step

    per_step = host_reads_per_step(monkeypatch, lambda n: tiny_config(tmp_path / f"r{n}"))
    assert per_step == 1


def test_cuda_graphs_without_cuda_say_so_and_train_the_same_weights(tmp_path, capsys):
    """``train.cuda_graphs`` on a CPU: one line says the network runs without graphs, and the
    run is the run without the flag, bit for bit (the graphs themselves: tests/gpu)."""
    fit(cfg_of(tmp_path / "g", train={"steps": 3, "cuda_graphs": True}), progress=False)
    assert "train.cuda_graphs: no CUDA device (cpu); the network runs without graphs" in (
        capsys.readouterr().out
    )
    fit(cfg_of(tmp_path / "p", train={"steps": 3}), progress=False)
    assert_same(weights(tmp_path / "g"), weights(tmp_path / "p"))


def test_a_step_decided_on_the_device_skips_like_a_step_read_at_once(tmp_path, capsys):
    """Fused AdamW: a step whose gradient is not finite is skipped on the device (the optimizer
    by its found_inf, the EMA by a zero weight) and read at the next step's update: no weight,
    EMA, optimizer or LR-schedule change, and the same log line, naming the same parameters,
    as the step read at once. A finite step then trains as before."""
    from condiff.train.step import nonfinite_grads, update
    from condiff.train.trainer import Trainer

    tr = Trainer(cfg_of(tmp_path / "r", train={"fused_adamw": True, "warmup_steps": 5}))
    tr.start(None)
    model, c = tr.model, tr.cfg.model
    x, t = torch.randn(2, c.in_img_channels, 16, 16), torch.tensor([3, 7])

    def step(poison: bool) -> tuple[torch.Tensor, bool | None]:
        tr.opt.zero_grad(set_to_none=True)
        hook = model.bottleneck_attn.register_full_backward_hook(
            lambda m, gin, gout: tuple(g * float("nan") for g in gin) if poison else None
        )
        loss = model(x, t).square().mean()
        loss.backward()
        hook.remove()
        norm, finite = update(tr, tr.step)
        tr.count(tr.window(), loss, finite)
        return norm, finite

    step(poison=False)
    tr.settle()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ema = {n: p.clone() for n, p in tr.ema.model.named_parameters()}
    opt_steps = [float(s["step"]) for s in tr.opt.state.values()]
    lr = tr.lr_sched.get_last_lr()[0]
    norm, finite = step(poison=True)
    assert finite is None and tr.pending is not None and not torch.isfinite(norm)
    names, bad, total = nonfinite_grads(model)  # the gradient is left as it was, unclipped
    assert 0 < bad < total
    capsys.readouterr()
    tr.settle()
    said = capsys.readouterr().out
    assert "step 1 skipped: loss" in said and f"non-finite gradient in {bad} of {total}" in said
    assert ", ".join(names) in said and "values: NaN" in said
    assert tr.result.skipped_steps == 1 and tr.lr_sched.get_last_lr()[0] == lr
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert all(torch.equal(p, ema[n]) for n, p in tr.ema.model.named_parameters())
    assert [float(s["step"]) for s in tr.opt.state.values()] == opt_steps
    step(poison=False)
    tr.settle()
    assert tr.lr_sched.get_last_lr()[0] > lr and tr.nonfinite_run == 0
    assert not all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    tr.close()


def test_a_step_decided_on_the_device_reads_one_value_on_the_host(tmp_path, monkeypatch):
    """Fused AdamW: still one read per step, the step before's flag, taken once this step's
    forward and backward are queued."""
    from tests.conftest import host_reads_per_step

    per_step = host_reads_per_step(
        monkeypatch, lambda n: tiny_config(tmp_path / f"r{n}", train={"fused_adamw": True})
    )
    assert per_step == 1
