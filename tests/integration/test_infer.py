"""Inference and evaluation through the real CLI on real files, with a tiny trained checkpoint."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

import condiff
from condiff.data import read_image
from condiff.evaluate.metrics import mae, psnr, ssim
from condiff.infer.outputs import uncertainty
from condiff.infer.tiling import TiledModel, blend_weights, blend_weights_np, tile_starts
from tests.conftest import run_cli


def test_load_and_call(tiny_run):
    pipe = condiff.load(tiny_run, device="cpu")
    assert pipe.target_channels == 1 and pipe.cond_channels == 1
    cond = torch.rand(2, 1, 20, 28) * 2 - 1
    g = torch.Generator().manual_seed(0)
    out = pipe(cond, steps=3, generator=g)
    assert out.shape == (2, 1, 20, 28) and out.abs().max() <= 1
    many = pipe(cond, steps=3, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert many.shape == (2, 3, 1, 20, 28)
    assert not torch.equal(many[:, 0], many[:, 1])
    again = pipe(cond, steps=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    with pytest.raises(ValueError, match=r"condition must be \(B, 1, H, W\)"):
        pipe(torch.zeros(1, 3, 16, 16))


def test_tiles_cover_and_blend_exactly():
    assert tile_starts(16, 16, 4) == [0]
    assert tile_starts(40, 16, 4) == [0, 12, 24]
    w = blend_weights(16, 4, torch.device("cpu"))
    assert w.min() > 0 and w[8, 8] == 1 and w[0, 0] < w[2, 2]
    for win, ov in ((16, 4), (33, 7), (8, 0)):  # built on the device = the numpy engine's weights
        assert np.array_equal(blend_weights(win, ov, "cpu").numpy(), blend_weights_np(win, ov))

    def pointwise(x, t):
        return torch.tanh(x[:, :1] * 3) + t.view(-1, 1, 1, 1) / 100

    x, t = torch.randn(2, 2, 45, 70), torch.tensor([5, 9])
    torch.testing.assert_close(TiledModel(pointwise, 16, 4)(x, t), pointwise(x, t))

    # Chunks of tiles come in one size (one compiled shape): 4 x 6 = 24 windows of 2 images, at
    # most 10 rows (5 windows) a call -> 5 calls of 5 windows, the last with one repeat.
    sizes = []

    def counting(x, t):
        sizes.append(x.shape[0])
        return pointwise(x, t)

    tiled = TiledModel(counting, 16, 4, max_batch=10)
    torch.testing.assert_close(tiled(x, t), pointwise(x, t))
    assert len(tile_starts(45, 16, 4)) * len(tile_starts(70, 16, 4)) == 24
    assert sizes == [10] * 5  # 24 windows + 1 repeat, 2 rows each


def test_sample_cli_keeps_names_sizes_and_bit_depth(tiny_run, tmp_path):
    import tifffile

    inp = tmp_path / "in"
    inp.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((16, 16)) * 255).astype(np.uint8)).save(inp / "small.png")
    Image.fromarray((rng.random((37, 53, 3)) * 255).astype(np.uint8)).save(inp / "odd rgb.jpg")
    tifffile.imwrite(inp / "deep.tif", (rng.random((24, 40)) * 65535).astype(np.uint16))
    out = tmp_path / "out"
    p = run_cli(
        "sample",
        "--checkpoint",
        str(tiny_run),
        "--input",
        str(inp),
        "--output",
        str(out),
        "--steps",
        "3",
        "--no-progress",
    )
    assert "3 image(s) done, 3 file(s) written" in p.stdout
    a, da = read_image(out / "small.png")
    b, db = read_image(out / "odd rgb.png")
    c, dc = read_image(out / "deep.tif")
    assert a.shape == (16, 16, 1) and da == 8
    assert b.shape == (37, 53, 1) and db == 8  # the model's target is gray
    assert c.shape == (24, 40, 1) and dc == 16


def test_large_nonsquare_image_is_tiled_without_seams(tiny_run):
    pipe = condiff.load(tiny_run, device="cpu")
    assert pipe.window == 16
    img = read_image(tiny_run / "data" / "gray" / "camera.png", "gray")[0][200:248, 100:180]
    cond = torch.from_numpy(img.transpose(2, 0, 1))[None] * 2 - 1  # (1, 1, 48, 80)

    def run(window, seed):
        pipe.window = window
        return pipe(cond, steps=8, generator=torch.Generator().manual_seed(seed))[0, 0]

    tiled = run(16, 0)
    assert tiled.shape == (48, 80) and torch.isfinite(tiled).all()
    # No seam: the jumps across tile boundaries are no larger than jumps elsewhere.
    dx = (tiled[:, 1:] - tiled[:, :-1]).abs().mean(0)  # (W-1,) mean jump between columns
    starts = [s for s in tile_starts(80, 16, 4) if s > 0]
    edges = sorted(
        {s - 1 for s in starts} | {s + 15 for s in starts[:-1]} | {s + 3 for s in starts}
    )
    edges = [e for e in edges if 0 <= e < dx.numel()]
    assert dx[edges].mean() < 1.5 * dx.mean()


def test_uncertainty_is_zero_where_samples_agree(tiny_run, tmp_path):
    s = np.random.default_rng(0).random((4, 6, 7, 1)).astype(np.float32)
    s[:, :3] = s[0, :3]  # top half identical across the 4 samples
    _mean, std = uncertainty(s)
    assert np.all(std[:3] == 0) and np.all(std[3:] > 0)
    np.testing.assert_allclose(std, s.std(0), atol=1e-6)

    inp = tmp_path / "x.png"
    Image.fromarray((np.random.default_rng(1).random((16, 24)) * 255).astype(np.uint8)).save(inp)
    out = tmp_path / "out"
    run_cli(
        "sample",
        "--checkpoint",
        str(tiny_run),
        "--input",
        str(inp),
        "--output",
        str(out),
        "--steps",
        "3",
        "--num-samples",
        "3",
        "--no-progress",
    )
    for name in (
        "x.png",
        "x_sample1.png",
        "x_sample2.png",
        "x_mean.png",
        "x_std.png",
        "x_uncertainty.npz",
    ):
        assert (out / name).is_file(), name
    z = np.load(out / "x_uncertainty.npz")
    samples = np.stack(
        [read_image(out / n)[0] for n in ("x.png", "x_sample1.png", "x_sample2.png")]
    )
    agree = (samples == samples[0]).all(0)
    assert np.all(z["std"][agree] < 1 / 255)  # agreeing pixels: std only from 8-bit rounding
    np.testing.assert_allclose(z["std"], samples.std(0), atol=1 / 255)


def _hand_ssim(a, b):
    """Wang et al. 2004 with a uniform 7x7 window and sample covariance (scikit-image's default)."""
    from numpy.lib.stride_tricks import sliding_window_view

    c1, c2 = (0.01) ** 2, (0.03) ** 2
    wa, wb = sliding_window_view(a, (7, 7)), sliding_window_view(b, (7, 7))
    ma, mb = wa.mean((-1, -2)), wb.mean((-1, -2))
    n = 49
    va = wa.var((-1, -2)) * n / (n - 1)
    vb = wb.var((-1, -2)) * n / (n - 1)
    cov = ((wa - ma[..., None, None]) * (wb - mb[..., None, None])).sum((-1, -2)) / (n - 1)
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2))
    return s.mean()  # the valid windows: scikit-image filters then crops 3 pixels per side


def test_metrics_match_hand_computation():
    rng = np.random.default_rng(0)
    t = rng.random((20, 20, 1)).astype(np.float64)
    p = np.clip(t + rng.normal(0, 0.05, t.shape), 0, 1)
    mse = ((p - t) ** 2).mean()
    assert psnr(p, t) == pytest.approx(10 * np.log10(1 / mse), rel=1e-9)
    assert mae(p, t) == pytest.approx(np.abs(p - t).mean(), rel=1e-12)
    assert ssim(p, t) == pytest.approx(_hand_ssim(p[:, :, 0], t[:, :, 0]), abs=1e-6)
    # 4 known pixels: MSE = (0.1^2 + 0.1^2) / 4 -> PSNR = 10 log10(200) = 23.0103 dB
    a = np.array([[0.5, 0.5], [0.5, 0.5]])[:, :, None]
    b = np.array([[0.6, 0.4], [0.5, 0.5]])[:, :, None]
    assert psnr(b, a) == pytest.approx(23.0103, abs=1e-4)
    assert mae(b, a) == pytest.approx(0.05)


def test_evaluate_cli_writes_a_report(tiny_run, tmp_path):
    out = tmp_path / "report"
    p = run_cli(
        "evaluate",
        "--checkpoint",
        str(tiny_run),
        "--output",
        str(out),
        "--sweep",
        "--max-side",
        "64",
        "--samplers",
        "ddim",
        "dpmpp_2m",
        "--steps-list",
        "2",
        "4",
        "--num-samples",
        "2",
        "--no-progress",
    )
    assert "| baseline |" in p.stdout and "MUSIQ, MANIQA and CLIP-IQA" in p.stdout
    assert "Posterior mean:" in p.stdout and "Best single sample:" in p.stdout
    for name in ("metrics.csv", "summary.csv", "quality_vs_steps.png", "report.md"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    images = {r["image"] for r in rows}
    assert len(images) == 2  # the run's held-out split
    assert {(r["method"], r["nfe"]) for r in rows} == {
        ("baseline", "0"),
        ("mean", "1"),
        ("sample (ddim 2)", "2"),
        ("sample (ddim 4)", "4"),
        ("sample (dpmpp_2m 2)", "2"),
        ("sample (dpmpp_2m 4)", "4"),
        ("mean of 2 (ddim 4)", "8"),
    }
    grids = sorted((out / "grids").glob("*.png"))
    assert len(grids) == 2
    # baseline | mean | sample | target | std: five 64-px panels and four 4-px gaps
    assert Image.open(grids[0]).size == (5 * 64 + 4 * 4, 64)
    summary = {r["method"]: r for r in csv.DictReader((out / "summary.csv").open())}
    for key, s in summary.items():
        vals = [float(r["psnr"]) for r in rows if r["method"] == key]
        assert float(s["psnr"]) == pytest.approx(np.mean(vals), abs=1e-4)
        # each method's first call at an input size is its warm-up, left out of the timing
        mine = [r for r in rows if r["method"] == key]
        flags = [r["warmup"] for r in mine]
        assert flags[0] == "1" and flags.count("1") == len({Image.open(g).size for g in grids})
        steady = [float(r["seconds"]) for r in mine if r["warmup"] == "0"]
        steady = steady or [float(r["seconds"]) for r in mine]
        assert float(s["seconds_per_image"]) == pytest.approx(np.mean(steady), abs=1e-3)
    # the baseline row is the bicubic upscale itself, recomputed here by hand
    from condiff.data.datasets import full_images, split, task_source
    from condiff.data.io import from_model

    pipe = condiff.load(tiny_run, device="cpu")
    src = task_source(pipe.cfg.data, bundled_dest=tiny_run / "data")
    name, cond, target = full_images(src, split(src, 2)[1], 4, max_side=64)[0]
    base = next(r for r in rows if r["image"] == name and r["method"] == "baseline")
    assert float(base["psnr"]) == pytest.approx(
        psnr(from_model(cond), from_model(target)), abs=1e-4
    )
    # the one-call mean is the ddim single top step, as the API gives it
    mean = pipe(cond[None], estimate="mean", generator=torch.Generator().manual_seed(0))[0]
    row = next(r for r in rows if r["image"] == name and r["method"] == "mean")
    assert float(row["psnr"]) == pytest.approx(psnr(from_model(mean), from_model(target)), abs=1e-3)


def test_evaluate_sr_protocol_cli(tiny_run, tmp_path):
    """--protocol sr on two made-up test sets: per-set rows, and published reference lines for
    the set named like a published one (Set5)."""
    rng = np.random.default_rng(0)
    sets = []
    for name, n in (("SetA", 2), ("Set5", 1)):
        folder = tmp_path / name
        folder.mkdir()
        for i in range(n):
            arr = (rng.random((36 + 4 * i, 42, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"im{i}.png")
        sets.append(str(folder))
    out = tmp_path / "sr"
    p = run_cli(
        "evaluate",
        "--checkpoint",
        str(tiny_run),
        "--protocol",
        "sr",
        "--images",
        *sets,
        "--output",
        str(out),
        "--no-progress",
    )
    assert "| method | NFE | SetA | Set5 |" in p.stdout
    assert "| *SRCNN (Dong et al. 2014), published* | - | - | 30.48 / 0.8628 |" in p.stdout
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert {(r["group"], r["method"]) for r in rows} == {
        (g, m) for g in ("SetA", "Set5") for m in ("baseline", "mean", "sample (dpmpp_2m 4)")
    }
    assert all(float(r["psnr_y"]) > 5 and float(r["lr_consistency"]) > 0 for r in rows)
    assert (out / "sr_psnr.png").is_file() and len(list((out / "grids" / "SetA").glob("*"))) == 2
    p = run_cli("evaluate", "--checkpoint", str(tiny_run), "--protocol", "sr", check=False)
    assert p.returncode == 2 and "--images" in p.stderr
    # --overlap: the tiles' shared pixels, checked against the window (the run's crop)
    p = run_cli(
        "evaluate", "--checkpoint", str(tiny_run), "--protocol", "sr", "--images", sets[0],
        "--overlap", "999", check=False,
    )  # fmt: skip
    assert p.returncode == 2 and "--overlap must be in [0," in p.stderr


def test_sample_cli_errors_name_the_problem(tiny_run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    p = run_cli(
        "sample",
        "--checkpoint",
        str(tiny_run),
        "--input",
        str(bad),
        "--output",
        str(tmp_path / "o"),
        "--strict",
        check=False,
    )
    assert p.returncode == 2 and "bad.png" in p.stderr
    p = run_cli(
        "sample",
        "--checkpoint",
        str(tmp_path / "missing"),
        "--input",
        str(bad),
        "--output",
        str(tmp_path / "o"),
        check=False,
    )
    assert p.returncode == 2 and "missing" in p.stderr


def test_batch_jobs_skip_bad_files_and_write_the_rest(tiny_run, tmp_path):
    """A folder with a corrupt file and a truncated one (header fine, pixels cut): both are
    reported and skipped, every other file is written, the exit status says some failed."""
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "c"):
        Image.fromarray((rng.random((24, 20)) * 255).astype(np.uint8)).save(folder / f"{name}.png")
    (folder / "b.png").write_bytes(b"not an image")
    Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(folder / "d.png")
    data = (folder / "d.png").read_bytes()
    (folder / "d.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    p = run_cli(
        "sample",
        "--checkpoint",
        str(tiny_run),
        "--input",
        str(folder),
        "--output",
        str(out),
        "--no-progress",
        check=False,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    assert sorted(x.name for x in out.iterdir()) == ["a.png", "c.png"]
    assert "2 image(s) done" in p.stdout and "2 skipped" in p.stdout
    assert "b.png" in p.stdout and "d.png" in p.stdout
    assert p.stdout.count(str(folder / "b.png")) == 1  # named once per line, not twice
    p = run_cli(
        "sample",
        "--checkpoint",
        str(tiny_run),
        "--input",
        str(folder),
        "--output",
        str(tmp_path / "strict"),
        "--strict",
        "--no-progress",
        check=False,
    )
    assert p.returncode == 2 and "b.png" in p.stderr and not (tmp_path / "strict").exists()
    # evaluate over the same folder: the bad files are listed in the report, the rest scored
    (folder / "e.png").write_bytes((folder / "a.png").read_bytes())
    rep = tmp_path / "rep"
    p = run_cli(
        "evaluate",
        "--checkpoint",
        str(tiny_run),
        "--images",
        str(folder),
        "--output",
        str(rep),
        "--estimate",
        "mean",
        "--no-progress",
        check=False,
    )
    assert p.returncode == 1, p.stdout + p.stderr
    rows = list(csv.DictReader((rep / "metrics.csv").open()))
    assert {r["image"] for r in rows} == {"a", "c", "e"}
    md = (rep / "report.md").read_text()
    assert "Skipped 2 unreadable file(s)" in md and "b.png" in md and "d.png" in md
