"""``--protocol sr``: Y conversion, border crop, PSNR/SSIM and the bicubic row, by hand."""

import numpy as np
import pytest
import torch
from PIL import Image

from condiff.config import TaskConfig
from condiff.data.tasks import SuperResolution, quantize_8bit
from condiff.evaluate.metrics import psnr_255, rgb_to_y, shave, ycbcr
from condiff.evaluate.protocols import SRProtocol
from condiff.evaluate.report import EvalItem


def sr_score(factor):
    return SRProtocol(factor=factor).score


def sr_items(folders, factor, color):
    return SRProtocol(factor=factor).items(folders, color=color)


def test_y_of_bt601_matches_hand_values():
    px = np.array(
        [[[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.5, 0.5, 0.5]]], np.float64
    )
    y = rgb_to_y(px)[0]
    assert y == pytest.approx([16.0, 235.0, 81.481, 144.553, 40.966, 125.5], abs=1e-9)
    gray = np.array([[[0.0], [1.0], [0.5]]])
    assert rgb_to_y(gray)[0] == pytest.approx([16.0, 235.0, 125.5])
    # a gray image's Y is the Y of the RGB image it came from (luma 0.299/0.587/0.114)
    rgb = np.random.default_rng(0).random((5, 7, 3))
    luma = (rgb @ np.array([0.299, 0.587, 0.114]))[:, :, None]
    np.testing.assert_allclose(rgb_to_y(luma), rgb_to_y(rgb), atol=1e-9)
    cbcr = ycbcr(np.ones((1, 1, 3)) * 0.3)[0, 0, 1:]
    assert cbcr == pytest.approx([128.0, 128.0], abs=1e-9)  # no colour in gray


def test_border_crop_and_psnr_by_hand():
    x = np.arange(12 * 12).reshape(12, 12)
    assert shave(x, 4).tolist() == x[4:8, 4:8].tolist()
    a = np.full((3, 3), 100.0)
    b = a.copy()
    b[1, 1] += 9.0  # MSE = 81 / 9 = 9 -> PSNR = 10 log10(255^2 / 9)
    assert psnr_255(b, a) == pytest.approx(10 * np.log10(255.0**2 / 9), abs=1e-9)


def test_sr_score_ignores_the_border_and_scores_y():
    rng = np.random.default_rng(0)
    target = rng.random((24, 24, 1))
    pred = target.copy()
    pred[:4] = 0.0  # damage only inside the 4-pixel border
    item = EvalItem("x", torch.zeros(1, 24, 24), torch.zeros(1, 24, 24))
    assert sr_score(4)(item, pred, target)["psnr_y"] == float("inf")
    pred[10, 10] += 0.1  # one interior pixel off by 0.1 -> 21.9 on the Y scale
    want = 10 * np.log10(255.0**2 / ((0.1 * 219) ** 2 / 16**2))
    assert sr_score(4)(item, pred, target)["psnr_y"] == pytest.approx(want, abs=1e-6)


def test_bicubic_row_equals_an_independent_computation(tmp_path):
    """HR RGB PNG -> gray luma -> mod-crop -> Pillow bicubic down, 8 bits -> Pillow bicubic up ->
    8 bits -> Y, border 4 -> PSNR: computed here without condiff, then through condiff."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:50, 0:45]
    smooth = 0.5 + 0.3 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]
    hr = np.clip(smooth + 0.08 * rng.standard_normal((50, 45, 3)), 0, 1)
    hr8 = np.round(hr * 255).astype(np.uint8)
    folder = tmp_path / "MySet"
    folder.mkdir()
    Image.fromarray(hr8).save(folder / "img.png")

    # by hand: mod-crop to 48 x 44, luma, Pillow's bicubic (antialiased, a = -0.5) both ways
    rgb = hr8[:48, :44].astype(np.float64) / 255
    luma = (rgb @ np.array([0.299, 0.587, 0.114])).astype(np.float32)
    low = np.asarray(Image.fromarray(luma, mode="F").resize((11, 12), Image.BICUBIC))
    low = np.round(np.clip(low, 0, 1) * 255) / 255
    up = np.asarray(
        Image.fromarray(low.astype(np.float32), mode="F").resize((44, 48), Image.BICUBIC)
    )
    up = np.round(np.clip(up, 0, 1) * 255) / 255
    y_hr = 16 + rgb @ np.array([65.481, 128.553, 24.966])
    y_up = 16 + 219 * up
    want = 10 * np.log10(255**2 / np.mean((y_hr[4:-4, 4:-4] - y_up[4:-4, 4:-4]) ** 2))

    (item,) = sr_items([folder], 4, "gray")
    assert item.group == "MySet" and item.target.shape == (1, 48, 44)
    assert item.low is not None and item.low.shape == (1, 12, 11)
    base = np.round(((item.cond.permute(1, 2, 0).numpy() + 1) / 2) * 255) / 255
    got = sr_score(4)(item, base, (item.target.permute(1, 2, 0).numpy() + 1) / 2)["psnr_y"]
    assert got == pytest.approx(want, abs=0.01)


def test_sr_task_input_is_8_bit_and_quantize_can_be_turned_off():
    x = torch.rand(1, 32, 32) * 2 - 1
    task = SuperResolution(TaskConfig(factor=4))
    low = task.downscale(x)
    levels = (low + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert torch.equal(quantize_8bit(low), low)
    raw = SuperResolution(TaskConfig(factor=4, quantize=False)).downscale(x)
    assert not torch.allclose(raw, raw.mul(127.5).round().div(127.5))
    assert task.degrade(x, np.random.default_rng(0)).shape == x.shape
