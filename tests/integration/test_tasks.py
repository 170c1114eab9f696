"""Denoising and JPEG end to end on a CPU, with the shipped small models (pretrained:NAME):
the Python API, `condiff sample`, and `condiff evaluate --protocol denoise|jpeg`, on real files."""

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import condiff
from condiff.data import export_bundled, read_image
from condiff.data.io import write_image
from condiff.data.tasks import with_noise_map
from condiff.evaluate.metrics import psnr
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Two bundled photographs (gray), cut to 96 x 64, as 8-bit PNG test sets."""
    root = tmp_path_factory.mktemp("photos")
    gray, colour = root / "GraySet", root / "ColourSet"
    gray.mkdir()
    colour.mkdir()
    for p in export_bundled(root / "all", "rgb")[:2]:
        x = np.round(read_image(p)[0][:64, :96] * 255).astype(np.uint8)
        Image.fromarray(x).save(colour / f"{p.stem}.png")
        Image.fromarray(np.round(x @ [0.299, 0.587, 0.114]).astype(np.uint8)).save(
            gray / f"{p.stem}.png"
        )
    return gray, colour


def test_shipped_denoiser_loads_by_name_and_removes_noise(photos):
    pipe = condiff.load("pretrained:denoise-gray-small", device="cpu")
    clean = read_image(sorted(photos[0].iterdir())[0])[0]
    rng = np.random.default_rng(0)
    noisy = clean + rng.normal(0, 25 / 255, clean.shape).astype(np.float32)
    cond = torch.from_numpy(noisy.transpose(2, 0, 1))[None] * 2 - 1
    mean = pipe(cond, estimate="mean")[0]
    out = ((mean.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    assert psnr(out, clean) > psnr(np.clip(noisy, 0, 1), clean) + 4  # measured: about +8 dB
    told = condiff.load("pretrained:denoise-gray-small-map", device="cpu")
    assert told.cfg.noise_map and told.cond_channels == 2  # the image and its noise level
    mean = told(with_noise_map(cond, 25.0), estimate="mean")[0]
    out_told = ((mean.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    assert psnr(out_told, clean) > psnr(np.clip(noisy, 0, 1), clean) + 4


def test_sample_cli_takes_pretrained_names(photos, tmp_path):
    out = tmp_path / "out"
    run_cli(
        "sample",
        "--checkpoint",
        "pretrained:jpeg-gray-small",
        "--input",
        str(photos[0]),
        "--output",
        str(out),
        "--estimate",
        "mean",
        "--no-progress",
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in photos[0].iterdir())
    p = run_cli(
        "sample",
        "--checkpoint",
        "pretrained:nope",
        "--input",
        str(photos[0]),
        "--output",
        str(out),
        check=False,
    )
    assert p.returncode == 2 and "no pretrained weights named 'nope'" in p.stderr
    assert "denoise-gray-small" in p.stderr and "jpeg-gray-small" in p.stderr  # what is shipped


def test_jpeg_protocol_cli_with_the_shipped_model(photos, tmp_path):
    out = tmp_path / "rep"
    p = run_cli(
        "evaluate",
        "--checkpoint",
        "pretrained:jpeg-gray-small",
        "--protocol",
        "jpeg",
        "--images",
        str(photos[0]),
        "--quality",
        "10",
        "30",
        "--estimate",
        "mean",
        "--output",
        str(out),
        "--no-progress",
    )
    assert "## q=10" in p.stdout and "| JPEG input (ours) |" in p.stdout
    means = {(r["level"], r["method"]): r for r in csv.DictReader((out / "summary.csv").open())}
    for q in ("q=10", "q=30"):
        gain = float(means[(q, "mean")]["psnr"]) - float(means[(q, "baseline")]["psnr"])
        assert gain > 0.3, (q, gain)  # the shipped model improves on the JPEG it was given
        assert float(means[(q, "mean")]["psnr_b"]) > float(means[(q, "baseline")]["psnr_b"])
    assert (out / "jpeg_psnr.png").is_file()


def test_protocols_refuse_the_wrong_model_or_set(photos, tmp_path):
    p = run_cli(
        "evaluate",
        "--checkpoint",
        "pretrained:sr4-gray-small",
        "--protocol",
        "jpeg",
        "--images",
        str(photos[0]),
        "--output",
        str(tmp_path / "a"),
        check=False,
    )
    assert p.returncode == 2 and "trained for super_resolution" in p.stderr
    p = run_cli(
        "evaluate",
        "--checkpoint",
        "pretrained:denoise-gray-small",
        "--protocol",
        "denoise",
        "--images",
        str(photos[1]),
        "--output",
        str(tmp_path / "b"),
        check=False,
    )
    assert p.returncode == 2 and "colour (RGB) image" in p.stderr
    p = run_cli(
        "evaluate",
        "--checkpoint",
        "pretrained:denoise-gray-small",
        "--protocol",
        "denoise",
        "--sigma",
        "300",
        "--images",
        str(photos[0]),
        check=False,
    )
    assert p.returncode == 2 and "--sigma must be in (0, 255]" in p.stderr
    p = run_cli(
        "train", "--config", "configs/denoise-gray.yaml", "data.task.sigma=[60,20]", check=False
    )
    assert p.returncode == 2 and "data.task.sigma" in p.stderr


def test_colour_jpeg_config_trains_and_is_scored_in_rgb(photos, tmp_path):
    """configs/jpeg-rgb.yaml (issue 30, item 2) at the tiny size: it trains on colour photographs,
    and `evaluate --protocol jpeg` scores it in RGB, beside the colour published rows (a set
    named LIVE1) and without the gray/Y ones."""
    data, run = export_bundled(tmp_path / "data", "rgb")[0].parent, tmp_path / "run"
    over = ["model.preset=tiny", "model.in_img_channels=6", "model.out_img_channels=3",
            f"data.root={data}", "data.crop_size=16", "data.val_count=1", "data.num_workers=0",
            f"train.output_dir={run}", "train.steps=4", "train.batch_size=4", "train.compile=false",
            "train.warmup_steps=1", "train.val_every=4", "train.ckpt_every=4", "train.val_steps=2"]  # fmt: skip
    assert "done: step 4" in run_cli("train", "--config", "configs/jpeg-rgb.yaml", *over).stdout
    out, live1 = tmp_path / "rep", tmp_path / "LIVE1"
    shutil.copytree(photos[1], live1)
    p = run_cli("evaluate", "--checkpoint", str(run), "--protocol", "jpeg", "--images",
                str(live1), "--quality", "10", "--estimate", "mean", "--output", str(out),
                "--no-progress")  # fmt: skip
    table = p.stdout.split("## q=10")[1].split("\n\n")[1]
    assert "RGB" in p.stdout and "| *FBCNN (Jiang et al. 2021), published* | - | 27.77" in table
    assert "DnCNN" not in table and "29.75" not in table  # FBCNN's Y row
    p = run_cli("evaluate", "--checkpoint", str(run), "--protocol", "jpeg", "--images",
                str(live1), "--quality", "10", "--estimate", "mean", "--limit", "1",
                "--output", str(tmp_path / "cut"), "--no-progress")  # fmt: skip
    assert "FBCNN" not in p.stdout.split("## q=10")[1].split("\n\n")[1]  # a whole set's row
    assert "--limit 1: the first 1 images of LIVE1; the published rows" in p.stdout
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["method"] for r in rows} == {"baseline", "mean"} and len(rows) == 4
    assert all(float(r["psnr"]) > 15 and 0 < float(r["ssim"]) <= 1 for r in rows)
    p = run_cli("evaluate", "--checkpoint", str(run), "--protocol", "jpeg", "--images",
                str(photos[0]), "--output", str(tmp_path / "g"), check=False)  # fmt: skip
    assert p.returncode == 2 and "a gray image, but this model restores colour images" in p.stderr


def test_a_noise_map_denoiser_trains_is_scored_with_each_level_and_samples_from_the_cli(
    photos, tmp_path
):
    """data.task.noise_map (issue 30's FFDNet lever): the condition carries the noise level as
    one more channel; `evaluate --protocol denoise` gives each level's map, and `condiff sample`
    takes the level with --noise-level (and refuses the model without it, or a model without a
    map given one)."""
    run = tmp_path / "run"
    over = ["model.preset=tiny", "model.in_img_channels=3", "data.task.noise_map=true",
            "data.root=bundled", "train.budget_minutes=null", "data.crop_size=16", "data.val_count=1", "data.num_workers=0",
            f"train.output_dir={run}", "train.steps=4", "train.batch_size=4", "train.compile=false",
            "train.warmup_steps=1", "train.val_every=4", "train.ckpt_every=4", "train.val_steps=2"]  # fmt: skip
    assert "done: step 4" in run_cli("train", "--config", "configs/denoise-gray.yaml", *over).stdout
    out = tmp_path / "rep"
    run_cli("evaluate", "--checkpoint", str(run), "--protocol", "denoise", "--images",
            str(photos[0]), "--sigma", "15", "50", "--estimate", "mean", "--output", str(out),
            "--no-progress")  # fmt: skip
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {r["level"] for r in rows} == {"σ=15", "σ=50"} and len(rows) == 8
    noisy = {r["level"]: float(r["psnr"]) for r in rows if r["method"] == "baseline"}
    assert noisy["σ=15"] == pytest.approx(24.6, abs=0.4)  # the input row: the image, not the map
    clean = sorted(photos[0].iterdir())[0]
    sample = ["sample", "--checkpoint", str(run), "--input", str(clean), "--estimate", "mean",
              "--no-progress", "--output"]  # fmt: skip
    p = run_cli(*sample, str(tmp_path / "o1"), "--noise-level", "25")
    assert read_image(tmp_path / "o1" / clean.name)[0].shape == (64, 96, 1)
    p = run_cli(*sample, str(tmp_path / "o2"), check=False)
    assert p.returncode == 2 and "pass --noise-level SIGMA" in p.stderr
    # auto: each image's own estimate, given to the model and written beside the outputs
    img = read_image(clean)[0]
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 25 / 255, img.shape), 0, 1)
    write_image(tmp_path / "noisy" / clean.name, noisy)
    auto = [*sample[:4], str(tmp_path / "noisy"), *sample[5:], str(tmp_path / "o4")]
    p = run_cli(*auto, "--noise-level", "auto")
    assert "noise level estimated (std, 0-255 scale): median" in p.stdout
    (row,) = list(csv.DictReader((tmp_path / "o4" / "noise-levels.csv").open()))
    assert row["file"] == clean.name and float(row["noise_level"]) == pytest.approx(25, abs=2.5)
    assert read_image(tmp_path / "o4" / clean.name)[0].shape == (64, 96, 1)
    p = run_cli(*sample, str(tmp_path / "o5"), "--noise-level", "loud", check=False)
    assert p.returncode == 2 and "or 'auto', got 'loud'" in p.stderr
    p = run_cli(*sample[:2], "pretrained:denoise-gray-small", *sample[3:], str(tmp_path / "o3"),
                "--noise-level", "25", check=False)  # fmt: skip
    assert p.returncode == 2 and "leave it out" in p.stderr
    p = run_cli("train", "--config", "configs/jpeg-gray.yaml", "data.task.noise_map=true",
                check=False)  # fmt: skip
    assert p.returncode == 2 and "data.task.noise_map is for the denoising task" in p.stderr
