"""KID and FID on crops: the estimator's algebra, the crop grid, and the offline Inception."""

import numpy as np
import pytest

from condiff.evaluate import kid as K

needs_inception = pytest.mark.skipif(
    not K.inception_file().is_file(),
    reason="Inception not set up: run `condiff metrics setup` (scripts/test.sh does)",
)


def test_crops_tile_from_the_top_left_and_replicate_gray():
    img = np.arange(5 * 7, dtype=np.float32).reshape(5, 7, 1)
    c = K.crops(img, 2, 2)
    assert c.shape == (2 * 3, 2, 2, 3)  # rows 0, 2; cols 0, 2, 4
    assert np.array_equal(c[1, :, :, 0], img[0:2, 2:4, 0]) and np.array_equal(c[..., 0], c[..., 2])
    assert K.crops(img, 8, 8).shape == (0, 8, 8, 3)  # smaller than one crop: none


def test_kid_is_unbiased_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 16)), rng.normal(size=(400, 16))
    same, shifted = K.kid(a, b), K.kid(a, b + 0.5)
    assert abs(same) < 0.02 and shifted > 10 * max(abs(same), 1e-3)
    # by hand for two points each: MMD^2 = k(x1,x2)/1 ... with the cubic kernel
    x, y = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, 0.0]])

    def k(u, v):
        return (u @ v / 2 + 1) ** 3

    want = (
        2 * k(x[0], x[1]) / 2 + 2 * k(y[0], y[1]) / 2 - 2 * np.mean([k(u, v) for u in x for v in y])
    )
    assert K.kid(x, y) == pytest.approx(want)
    assert K.fid(a, a) == pytest.approx(0.0, abs=1e-6) and K.fid(a, b + 0.5) > K.fid(a, b)


@needs_inception
def test_inception_features_separate_a_blur_from_the_image():
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(1)
    # a textured image: smooth shapes plus fine noise, 128 x 192 -> six 64 px crops
    img = np.clip(
        gaussian_filter(rng.random((128, 192, 3)), (6, 6, 0)) * 2
        - 0.5
        + rng.random((128, 192, 3)) * 0.3,
        0,
        1,
    ).astype(np.float32)
    net = K.InceptionCrops(crop=64, stride=64)
    f = net.features(img)
    assert f.shape == (6, 2048) and np.isfinite(f).all()
    blur = gaussian_filter(img, (2, 2, 0))
    d_blur = np.abs(net.features(blur) - f).mean()
    d_self = np.abs(net.features(img.copy()) - f).mean()
    assert d_self < 1e-6 < d_blur


def test_report_tables_and_plot_show_kid_beside_lpips(tmp_path):
    from condiff.evaluate.protocols.sr import SRProtocol
    from condiff.evaluate.report import Report, Row
    from condiff.evaluate.writer import write_report

    rep = Report(out_dir=tmp_path)
    for est, label, lp in (
        ("baseline", "baseline", 0.4),
        ("mean", "mean", 0.3),
        ("perceptual", "perceptual", 0.15),
    ):
        for img in ("a", "b"):
            scores = {"psnr_y": 27.0, "ssim_y": 0.7, "lpips": lp, "dists": lp / 2}
            rep.rows.append(
                Row("Set14", img, label, est, "", 0, 0 if est == "baseline" else 1, 0.0, scores)
            )
        rep.set_scores[("Set14", "", label)] = {"kid": lp / 100, "fid": 100 * lp, "crops": 12}
    write_report(rep, SRProtocol(factor=4))
    md = (tmp_path / "report.md").read_text()
    assert "Set-level scores on crops (KID x 1000 / FID" in md and "Set14 12" in md
    assert "| perceptual | 1 | 1.50 / 15.0 |" in md  # KID x 1000 / FID
    assert "| perceptual | 1 | 27.00 / 0.150 / 0.075 |" in md
    assert "not a posterior sample" in md  # the closing text says what the estimate is
    assert (tmp_path / "kid_lpips.png").is_file() and (tmp_path / "pd_plane.png").is_file()
