"""LPIPS and DISTS, computed offline from the converted registry weights, against the official
implementations' values on two calibration pairs (tests/data/calibration/README.md)."""

from pathlib import Path

import numpy as np
import pytest

from condiff.data.io import read_image
from condiff.evaluate import perceptual

DATA = Path(__file__).resolve().parents[1] / "data" / "calibration"
OFFICIAL = {"I03": {"lpips": 0.7237, "dists": 0.4742}, "I04": {"lpips": 0.2572, "dists": 0.1424}}

needs_weights = pytest.mark.skipif(
    bool({"lpips", "dists"} & perceptual.missing().keys()),
    reason="LPIPS/DISTS weights not set up: run `condiff metrics setup` (scripts/test.sh does)",
)


@needs_weights
@pytest.mark.parametrize("pair", sorted(OFFICIAL))
def test_lpips_and_dists_match_the_official_values(pair):
    scorer = perceptual.Perceptual(["lpips", "dists"])
    dist, ref = (read_image(DATA / f"{pair}_{k}.png")[0] for k in ("dist", "ref"))
    got = scorer.scores(dist, ref)
    for name, want in OFFICIAL[pair].items():
        assert got[name] == pytest.approx(want, abs=1e-4), name


@needs_weights
def test_perceptual_scores_are_zero_for_identical_images_and_gray_is_replicated():
    scorer = perceptual.Perceptual(["lpips", "dists"])
    x = read_image(DATA / "I04_ref.png")[0]
    assert scorer.scores(x, x)["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert scorer.scores(x, x)["dists"] == pytest.approx(0.0, abs=1e-4)
    gray = x.mean(axis=2, keepdims=True)
    noisy = np.clip(gray + np.random.default_rng(0).normal(0, 0.1, gray.shape), 0, 1)
    as_rgb = scorer.scores(np.repeat(noisy, 3, 2), np.repeat(gray, 3, 2))
    assert scorer.scores(noisy.astype(np.float32), gray) == pytest.approx(as_rgb, rel=1e-5)


@needs_weights
def test_images_too_small_for_alexnet_get_no_lpips():
    scorer = perceptual.Perceptual(["lpips", "dists"])
    x = np.random.default_rng(0).random((24, 20, 1)).astype(np.float32)
    assert set(scorer.scores(x, x)) == {"dists"}


def test_missing_weights_are_reported_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("CONDIFF_CACHE", str(tmp_path))
    scorer = perceptual.Perceptual()
    assert scorer.nets == {} and set(scorer.skipped) == {"lpips", "dists"}
    assert "condiff metrics setup" in scorer.skipped["lpips"]


def test_the_weights_unpickler_admits_numpy_arrays_only():
    import io
    import pickle

    good = pickle.dumps({"a": np.arange(3.0)})
    assert perceptual._NumpyOnly(io.BytesIO(good)).load()["a"].tolist() == [0.0, 1.0, 2.0]
    evil = pickle.dumps(print)  # any other global is refused
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        perceptual._NumpyOnly(io.BytesIO(evil)).load()
