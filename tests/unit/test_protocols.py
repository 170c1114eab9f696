"""The denoising and JPEG protocols: their degradations and scores by hand, and their errors."""

import io
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from condiff.config import DataConfig, ModelConfig, RunConfig, TaskConfig
from condiff.data.io import estimate_noise_level, with_noise_map_np
from condiff.data.tasks import Denoising, Jpeg, with_noise_map
from condiff.evaluate.metrics import blocking_effect_factor, psnr_b, y_uint8
from condiff.evaluate.protocols import DenoiseProtocol, JpegProtocol
from condiff.evaluate.protocols.denoise import noisy
from condiff.evaluate.protocols.jpeg import jpeg_roundtrip
from condiff.infer.run import CondLayout, check_layout


def _write(folder, name, arr):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(folder / f"{name}.png")


def test_noise_is_kairs_seeded_draw_and_is_not_clipped():
    clean = np.full((64, 64, 1), 0.5, np.float32)
    np.random.seed(0)  # KAIR: np.random.seed(0) before each image, then np.random.normal
    want = clean + np.random.normal(0, 25 / 255.0, clean.shape)
    np.testing.assert_allclose(noisy(clean, 25), want, atol=1e-6)
    white = np.ones((64, 64, 1), np.float32)
    assert noisy(white, 25).max() > 1.1  # unclipped, as the field's input rows are


def test_noisy_input_row_is_the_fields_20_2_db(tmp_path):
    """The baseline row is scored unclipped: PSNR = 20 log10(255 / 25) = 20.17 dB at sigma 25."""
    rng = np.random.default_rng(0)
    img = (rng.random((128, 128)) * 155 + 50).astype(np.uint8)
    _write(tmp_path / "SetX", "a", img)
    proto = DenoiseProtocol(sigmas=(25.0,))
    (item,) = proto.items([tmp_path / "SetX"], color="gray")
    assert item.level == "σ=25" and item.group == "SetX"
    raw = ((proto.baseline(item.cond).float() + 1) / 2).permute(1, 2, 0).numpy()
    tgt = ((item.target + 1) / 2).permute(1, 2, 0).numpy()
    assert proto.score(item, raw, tgt)["psnr"] == pytest.approx(20.17, abs=0.1)


def test_set12_is_also_scored_without_the_image_that_overlaps_bsd400(tmp_path):
    for name in ("01", "04"):
        _write(tmp_path / "Set12", name, np.full((32, 32), 100, np.uint8))
    items = DenoiseProtocol(sigmas=(15.0, 50.0)).items([tmp_path / "Set12"], color="gray")
    assert [(i.name, i.level, i.also) for i in items] == [
        ("01", "σ=15", ("Set12 w/o 04",)),
        ("01", "σ=50", ("Set12 w/o 04",)),
        ("04", "σ=15", ()),
        ("04", "σ=50", ()),
    ]


def test_denoise_protocol_refuses_a_colour_set_for_a_gray_model_and_bad_sigmas(tmp_path):
    _write(tmp_path / "CSet", "a", np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="colour .* gray model|gray model"):
        DenoiseProtocol().items([tmp_path / "CSet"], color="gray")
    with pytest.raises(ValueError, match="--sigma must be in"):
        DenoiseProtocol(sigmas=(0.0,))
    with pytest.raises(ValueError, match="--quality must be in"):
        JpegProtocol(qualities=(101,))


def test_jpeg_works_on_matlabs_y_and_ijg_encoding(tmp_path):
    rgb = (np.random.default_rng(1).random((24, 40, 3)) * 255).astype(np.uint8)
    y = y_uint8(rgb.astype(np.float64) / 255)
    hand = np.round(16 + rgb @ np.array([65.481, 128.553, 24.966]) / 255).astype(np.uint8)
    assert (y == hand).all()
    buf = io.BytesIO()
    Image.fromarray(y).save(buf, format="JPEG", quality=10)
    assert (jpeg_roundtrip(y, 10) == np.asarray(Image.open(buf))).all()
    _write(tmp_path / "LIVE", "a", rgb)
    (item,) = JpegProtocol(qualities=(10,)).items([tmp_path / "LIVE"], color="gray")
    assert item.level == "q=10" and item.target.shape == (1, 24, 40)
    got = np.round(((item.target[0] + 1) / 2 * 255).numpy()).astype(np.uint8)
    assert (got == y).all()  # the clean image is MATLAB's Y, not luma


def test_jpeg_scores_a_colour_model_in_rgb_as_it_trains(tmp_path):
    """A colour model: the RGB image JPEG-encoded as the training task encodes it, scored over
    all channels, beside the colour published rows (LIVE1 q 10 / 40) instead of the gray/Y
    ones; a gray image is refused by name."""
    rgb = (np.random.default_rng(2).random((24, 40, 3)) * 255).astype(np.uint8)
    _write(tmp_path / "LIVE", "a", rgb)
    proto = JpegProtocol(qualities=(10,))
    proto.use_colour()
    assert "RGB" in proto.description
    fbcnn = next(p for p in proto.published if p.name.startswith("FBCNN"))
    assert fbcnn.figures == {("LIVE1", "q=10"): {"psnr": 27.77}, ("LIVE1", "q=40"): {"psnr": 32.34}}
    assert not any(("Classic5", "q=10") in p.figures for p in proto.published)  # no Y rows
    (item,) = proto.items([tmp_path / "LIVE"], color="rgb")
    assert item.cond.shape == item.target.shape == (3, 24, 40)
    task = Jpeg(TaskConfig(name="jpeg", quality=10)).degrade(item.target, np.random.default_rng())
    assert torch.allclose(item.cond, task, atol=1e-6)  # evaluation encodes as training does
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=10)
    want = np.asarray(Image.open(buf).convert("RGB"))
    got = np.round((item.cond.permute(1, 2, 0).numpy() + 1) / 2 * 255).astype(np.uint8)
    assert (got == want).all()
    pred, tgt = want.astype(np.float64) / 255, rgb.astype(np.float64) / 255
    scores = proto.score(item, pred, tgt)
    mse = np.mean((want.astype(np.float64) - rgb) ** 2)
    assert scores["psnr"] == pytest.approx(10 * np.log10(255**2 / mse), abs=1e-9)
    per = [
        psnr_b(want[:, :, c].astype(np.float64), rgb[:, :, c].astype(np.float64)) for c in range(3)
    ]
    assert scores["psnr_b"] == pytest.approx(np.mean(per), abs=1e-9)
    _write(tmp_path / "Classic5", "g", rgb[:, :, 0])
    with pytest.raises(ValueError, match=r"g\.png: a gray image, but this model restores colour"):
        proto.items([tmp_path / "Classic5"], color="rgb")


def test_psnr_b_penalises_blocking_only():
    smooth = np.tile(np.linspace(0, 1, 64), (64, 1))
    assert blocking_effect_factor(smooth) == 0.0
    blocky = smooth.copy()
    blocky[:, 8::8] += 0.1  # jumps at every block boundary
    assert blocking_effect_factor(blocky) > 0
    a, t = blocky * 255, smooth * 255
    mse = np.mean((a - t) ** 2) / 255**2
    assert psnr_b(a, t) < 10 * np.log10(1 / mse)  # PSNR-B below plain PSNR


def test_task_levels_are_drawn_per_image_from_a_range():
    x = torch.zeros(1, 32, 32)
    d = Denoising(TaskConfig(name="denoising", sigma=(0.0, 55.0)))
    stds = [float(d.degrade(x, np.random.default_rng(s)).std()) * 255 / 2 for s in range(8)]
    assert max(stds) - min(stds) > 10 and all(0 <= s < 57 for s in stds)
    assert d.degrade(x, np.random.default_rng(3)).equal(d.degrade(x, np.random.default_rng(3)))
    fixed = Denoising(TaskConfig(name="denoising", sigma=25.0))
    assert float(fixed.degrade(x, np.random.default_rng(0)).std()) * 255 / 2 == pytest.approx(
        25, rel=0.1
    )
    j = Jpeg(TaskConfig(name="jpeg", quality=(10, 95)))
    img = torch.rand(1, 32, 32) * 2 - 1
    errs = {
        round(float((j.degrade(img, np.random.default_rng(s)) - img).abs().mean()), 3)
        for s in range(6)
    }
    assert len(errs) > 2  # different qualities, different errors


def test_a_noise_map_carries_each_images_level_and_the_input_row_stays_the_image(tmp_path):
    x = torch.zeros(1, 32, 32)
    d = Denoising(TaskConfig(name="denoising", sigma=(0.0, 55.0), noise_map=True))
    assert d.cond_channels(1) == 2 and d.cond_channels(3) == 4
    for seed in range(4):
        c = d.degrade(x, np.random.default_rng(seed))
        level = (float(c[1, 0, 0]) + 1) * 127.5  # sigma / 127.5 - 1 on every pixel
        assert c[1].unique().numel() == 1
        assert level == pytest.approx(float(c[0].std()) * 255 / 2, rel=0.1)
        assert d.baseline(c, 1).equal(c[:1])
    # the numpy twin (condiff sample, condiff serve) adds the same channel as training does
    y = torch.rand(1, 8, 8) * 2 - 1
    assert np.array_equal(with_noise_map_np(y.numpy(), 25.0), with_noise_map(y, 25.0).numpy())
    _write(tmp_path / "SetX", "a", np.full((32, 32), 100, np.uint8))
    task = TaskConfig(name="denoising", noise_map=True)
    proto = DenoiseProtocol(sigmas=(15.0, 50.0))
    proto.check(SimpleNamespace(cfg=RunConfig(data=DataConfig(task=task))))
    for item, s in zip(proto.items([tmp_path / "SetX"], color="gray"), (15, 50), strict=True):
        assert item.cond.shape == (2, 32, 32)
        assert torch.allclose(item.cond[1], torch.full((32, 32), s / 127.5 - 1))
        assert proto.baseline(item.cond).equal(item.cond[:1])


def test_sample_gives_a_noise_level_only_to_a_model_trained_with_a_map():
    """`condiff sample --noise-level` reads the model's config, not its channel count: an
    inpainting model's image + mask has a map model's channels, and must refuse the level."""

    def layout(name, in_channels, noise_map=False):  # a gray model: the target is 1 channel
        task = TaskConfig(name=name, noise_map=noise_map)
        model = ModelConfig(preset="tiny", in_img_channels=in_channels, out_img_channels=1)
        return CondLayout.of(RunConfig(model=model, data=DataConfig(task=task)))

    assert layout("inpainting", 3) == (2, False) and layout("denoising", 3, True) == (2, True)
    assert check_layout(layout("denoising", 3, True), 25.0) == 1
    assert check_layout(CondLayout(4, True), 25.0) == 3
    assert check_layout(layout("denoising", 3, True), "auto") == 1
    for bad, level, says in [
        (layout("denoising", 3, True), None, "pass --noise-level SIGMA"),
        (layout("inpainting", 3), 25.0, "leave it out"),  # 2 channels: the image and its mask
        (layout("inpainting", 3), "auto", "leave it out"),
        (1, 25.0, "leave it out"),
        (layout("denoising", 3, True), 300.0, "must be a number in [0, 255]"),
        (layout("denoising", 3, True), "loud", "or 'auto', got 'loud'"),
        (layout("inpainting", 3), None, "other layouts"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            check_layout(bad, level)


@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_the_noise_level_estimate_is_near_the_truth_even_in_an_8_bit_file(tmp_path, color):
    """`--noise-level auto`: the estimate from the image alone, as a user's noisy 8-bit file
    holds it (noise clipped at black and white), within 2 of the true std at the levels the
    map models are scored at. Without its choice of blocks away from black and white, a clipped
    sigma 50 reads ~46 on Set12 (measured), so the 50 case would fail."""
    from condiff.data.bundled import export_bundled
    from condiff.data.io import read_image

    files = export_bundled(tmp_path, color)
    names = {"camera", "astronaut", "coffee", "chelsea"}
    clean = [read_image(f, color)[0] for f in files if f.stem in names]
    assert len(clean) >= 2
    rng = np.random.default_rng(0)
    for img in clean:
        for sigma in (15.0, 25.0, 50.0):
            noisy8 = np.round(np.clip(img + rng.normal(0, sigma / 255, img.shape), 0, 1) * 255)
            got = estimate_noise_level(noisy8.transpose(2, 0, 1) / 127.5 - 1)
            assert got == pytest.approx(sigma, abs=2.0), (sigma, got)
    flat = np.zeros((1, 64, 64))
    assert estimate_noise_level(flat) == 0.0
    with pytest.raises(ValueError, match="at least 3x3"):
        estimate_noise_level(np.zeros((1, 2, 5)))
