"""The console script: help, info, and a CPU smoke run of the benchmark."""

import json

import pytest

from tests.conftest import run_cli


def test_help_lists_every_command():
    out = run_cli("--help").stdout
    for cmd in ("demo", "train", "sample", "evaluate", "info", "bench", "export", "quantize"):
        assert cmd in out
    assert "--num-samples" in run_cli("sample", "--help").stdout


def test_info_for_preset_and_checkpoint(tiny_run):
    out = run_cli("info").stdout
    assert "19,483,137" in out and "encoder 1" in out and "bottleneck" in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    gflop = float(total.split()[-2])
    assert 155 < gflop < 165  # ~162 GFLOP per 120x120 image (ANCHORS.md), attention ~120
    out = run_cli("info", "--preset", "seed-rgb480").stdout
    assert "20,802,435" in out
    out = run_cli("info", "--checkpoint", str(tiny_run)).stdout
    assert "checkpoint" in out and "150,881" in out
    assert run_cli("info", "--preset", "nope", check=False).returncode == 2


def test_bench_smoke_on_cpu(tmp_path):
    js = tmp_path / "bench.json"
    out = run_cli(
        "bench",
        "--presets",
        "tiny",
        "--repeats",
        "1",
        "--no-compile",
        "--no-diffusers",
        "--json",
        str(js),
        "--train-loop",
        "2",
    ).stdout
    assert "eager fp32" in out and "train img/s" in out
    rows = json.loads(js.read_text())["rows"]
    assert rows[0]["train_img_s"] > 0 and rows[0]["dpmpp20_ms_b1"] > 0 and not rows[0]["note"]
    # condiff train's own loop (photographs from disk, EMA, logging) beside the bare step
    loop = rows[-1]
    assert loop["variant"].startswith("condiff train loop") and not loop["note"]
    assert loop["train_img_s"] > 0 and "% of the bare step (eager fp32" in out


def test_version_config_errors_and_overrides_anywhere(tmp_path, tiny_run):
    assert run_cli("--version").stdout.strip().startswith("condiff 0.")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: [1,\n")
    p = run_cli("train", "--config", str(bad), check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "bad.yaml: line 3, column 1 not valid YAML" in p.stderr
    # an override after --resume is still an override (here a bad one, so nothing trains)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  steps: 5\n")
    p = run_cli("train", "--config", str(cfg), "train.lr=1e-3", "--resume", "auto",
                "train.steps=0", check=False)  # fmt: skip
    assert p.returncode == 2 and "train.steps must be a positive integer" in p.stderr
    p = run_cli("train", "--config", str(cfg), "--resume", "auto", "--nope", check=False)
    assert p.returncode == 2 and "unrecognized arguments: --nope" in p.stderr
    # a checkpoint whose config.json is not a run config: one line naming the file
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(sorted((tiny_run / "checkpoints").iterdir())[-1], ck)
    (ck / "config.json").write_text("[1, 2, 3]")
    p = run_cli("sample", "--checkpoint", str(ck), "--input", str(ck), "--output", str(tmp_path),
                check=False)  # fmt: skip
    assert p.returncode == 2 and "config.json: expected a run config" in p.stderr


def test_bench_infer_times_tile_plans_side_by_side(capsys):
    from condiff.bench.infer import run_infer_bench

    rows = run_infer_bench(
        [96], preset="tiny", window=64, device="cpu", repeats=1, tiles=[(32, 8), (64, 16)]
    )
    # the training window's plan first, a repeated plan once, tiles as the tiler lays them
    assert [(r.window, r.overlap, r.tiles) for r in rows] == [(64, 16, 4), (32, 8, 16)]
    assert all(r.mean_ms > 0 and r.sample_ms > r.mean_ms for r in rows)
    assert "tile/overlap" in capsys.readouterr().out
    with pytest.raises(ValueError, match="overlap lie in"):
        run_infer_bench([64], preset="tiny", window=64, device="cpu", repeats=1, tiles=[(32, 32)])
