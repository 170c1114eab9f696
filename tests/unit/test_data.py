"""Image I/O, paired folders, tasks, crops and splits, on real files."""

import numpy as np
import pytest
import torch
from PIL import Image

from condiff.config import ConfigError, DataConfig, ModelConfig, TaskConfig
from condiff.data import (
    BUNDLED,
    ImageError,
    TrainCrops,
    check_channels,
    export_bundled,
    make_source,
    make_task,
    probe_image,
    read_image,
    split,
    write_image,
)


def save_png(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_read_write_8_and_16_bit(tmp_path, rng):
    g8 = (rng.random((10, 12)) * 255).astype(np.uint8)
    rgb8 = (rng.random((10, 12, 3)) * 255).astype(np.uint8)
    g16 = (rng.random((10, 12)) * 65535).astype(np.uint16)
    save_png(tmp_path / "g8.png", g8)
    save_png(tmp_path / "rgb8.png", rgb8)
    Image.fromarray(rgb8).save(tmp_path / "rgb8.jpg", quality=95)
    import tifffile

    tifffile.imwrite(tmp_path / "g16.tif", g16)
    tifffile.imwrite(tmp_path / "rgb16.tif", (rng.random((10, 12, 3)) * 65535).astype(np.uint16))
    Image.fromarray(g16).save(tmp_path / "g16.png")

    x, d = read_image(tmp_path / "g8.png")
    assert x.shape == (10, 12, 1) and d == 8 and np.allclose(x[:, :, 0] * 255, g8)
    x, d = read_image(tmp_path / "rgb8.png")
    assert x.shape == (10, 12, 3) and d == 8
    assert read_image(tmp_path / "rgb8.png", "gray")[0].shape == (10, 12, 1)
    assert read_image(tmp_path / "g8.png", "rgb")[0].shape == (10, 12, 3)
    assert read_image(tmp_path / "rgb8.jpg")[0].shape == (10, 12, 3)
    x, d = read_image(tmp_path / "g16.tif")
    assert d == 16 and np.allclose(x[:, :, 0] * 65535, g16, atol=0.5)
    x, d = read_image(tmp_path / "g16.png")
    assert d == 16 and np.allclose(x[:, :, 0] * 65535, g16, atol=0.5)
    x, d = read_image(tmp_path / "rgb16.tif")
    assert x.shape == (10, 12, 3) and d == 16
    assert probe_image(tmp_path / "g16.tif").bit_depth == 16
    # writing 16-bit TIFF keeps 16-bit precision
    y = rng.random((5, 6, 1)).astype(np.float32)
    write_image(tmp_path / "out.tif", y, 16)
    back, d = read_image(tmp_path / "out.tif")
    assert d == 16 and np.abs(back - y).max() < 1e-4


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    with pytest.raises(ImageError, match="broken.png"):
        probe_image(bad)
    with pytest.raises(ImageError, match="broken.png"):
        read_image(bad)


def make_pairs(root, names, rng, size=(32, 32), cond_channels=1):
    (root / "cond").mkdir(parents=True)
    (root / "target").mkdir()
    for n in names:
        save_png(root / "target" / f"{n}.png", (rng.random(size) * 255).astype(np.uint8))
        shape = size if cond_channels == 1 else (*size, cond_channels)
        save_png(root / "cond" / f"{n}.png", (rng.random(shape) * 255).astype(np.uint8))
    return root


def test_paired_folders_and_errors(tmp_path, rng):
    root = make_pairs(tmp_path / "ok", ["a", "b", "c"], rng)
    src = make_source(DataConfig(kind="paired", root=str(root)))
    assert len(src) == 3 and src.target_channels == 1 and src.cond_channels == 1
    cond, target = src.load_raw(0)
    assert cond.shape == target.shape == (1, 32, 32) and target.min() >= -1 and target.max() <= 1

    miss = make_pairs(tmp_path / "miss", ["a", "b"], rng)
    (miss / "cond" / "b.png").unlink()
    with pytest.raises(ImageError, match=r"missing pair.*b\.png"):
        make_source(DataConfig(kind="paired", root=str(miss)))

    size = make_pairs(tmp_path / "size", ["a"], rng)
    save_png(size / "cond" / "a.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(ImageError, match="size mismatch.*a.png"):
        make_source(DataConfig(kind="paired", root=str(size)))

    corrupt = make_pairs(tmp_path / "corrupt", ["a", "b"], rng)
    (corrupt / "target" / "b.png").write_bytes(b"garbage")
    with pytest.raises(ImageError, match="b.png"):
        make_source(DataConfig(kind="paired", root=str(corrupt)))


def test_manifest_csv(tmp_path, rng):
    root = make_pairs(tmp_path / "m", ["x", "y"], rng)
    (root / "pairs.csv").write_text(
        "cond,target\ncond/x.png,target/x.png\ncond/y.png,target/y.png\n"
    )
    src = make_source(DataConfig(kind="paired", root=str(root), manifest=str(root / "pairs.csv")))
    assert [i.name for i in src.items] == ["x", "y"]
    (root / "bad.csv").write_text("cond/x.png,target/nope.png\n")
    with pytest.raises(ImageError, match="nope.png"):
        make_source(DataConfig(kind="paired", root=str(root), manifest=str(root / "bad.csv")))


def test_wrong_channel_count_says_how_to_fix(tmp_path, rng):
    root = make_pairs(tmp_path / "rgb", ["a"], rng, cond_channels=3)
    src = make_source(DataConfig(kind="paired", root=str(root)))
    with pytest.raises(ValueError, match=r"model.in_img_channels=4 model.out_img_channels=1"):
        check_channels(ModelConfig(), src)
    check_channels(ModelConfig(in_img_channels=4), src)


def test_bundled_photographs_install_offline(tmp_path):
    paths = export_bundled(tmp_path, "gray")
    assert len(paths) >= 15 and len(paths) <= len(BUNDLED)
    x, _d = read_image(paths[0])
    assert x.shape[2] == 1 and x.shape[0] >= 256 and x.std() > 0.05  # a real photograph


@pytest.mark.parametrize(
    "name,tc,cc",
    [
        ("super_resolution", 1, 1),
        ("denoising", 1, 1),
        ("colorization", 3, 1),
        ("inpainting", 1, 2),
        ("jpeg", 1, 1),
    ],
)
def test_tasks_channels_and_degradation(name, tc, cc):
    task = make_task(TaskConfig(name=name))
    color = 3 if name == "colorization" else 1
    assert task.target_channels(color) == tc and task.cond_channels(tc) == cc
    x = torch.rand(tc, 32, 32) * 2 - 1
    c = task.degrade(x, np.random.default_rng(0))
    assert c.shape == (cc, 32, 32)
    assert not torch.allclose(c[:1], x[:1])  # it degrades
    assert task.baseline(c, tc).shape == (tc, 32, 32)


@pytest.mark.parametrize("channels,block", [(1, 8), (3, 16)])
def test_jpeg_grid_shift_moves_the_block_grid_off_the_corner(channels, block):
    """data.task.grid_shift: each condition is the JPEG of the image reflected by some (dy, dx)
    within one block (16 in colour: 4:2:0), cut back; 0 keeps the grid at the corner."""
    from condiff.data.tasks import jpeg_uint8

    x = torch.rand(channels, 40, 48) * 2 - 1
    arr = np.round(((x + 1) * 127.5).permute(1, 2, 0).numpy()).astype(np.uint8)

    def encoded(dy: int, dx: int) -> torch.Tensor:
        padded = np.pad(arr, ((dy, 0), (dx, 0), (0, 0)), mode="reflect")
        out = jpeg_uint8(padded, 10)[dy:, dx:].astype(np.float32) / 127.5 - 1
        return torch.from_numpy(out).permute(2, 0, 1)

    candidates = {(dy, dx): encoded(dy, dx) for dy in range(block) for dx in range(block)}
    aligned = make_task(TaskConfig(name="jpeg", quality=10))
    assert torch.equal(aligned.degrade(x, np.random.default_rng(0)), candidates[(0, 0)])
    shifted = make_task(TaskConfig(name="jpeg", quality=10, grid_shift=1.0))
    seen = set()
    for seed in range(8):
        got = shifted.degrade(x, np.random.default_rng(seed))
        assert got.shape == x.shape
        seen.add(next(k for k, want in candidates.items() if torch.equal(got, want)))
    assert len(seen) >= 4 and seen != {(0, 0)}
    with pytest.raises(ConfigError, match=r"data\.task\.grid_shift is for the jpeg task"):
        TaskConfig(name="denoising", grid_shift=0.5)
    with pytest.raises(ConfigError, match=r"data\.task\.grid_shift"):
        TaskConfig(name="jpeg", grid_shift=1.5)


def test_super_resolution_condition_is_blurred_but_keeps_mean():
    task = make_task(TaskConfig(name="super_resolution", factor=4))
    x = torch.rand(1, 64, 64) * 2 - 1
    c = task.degrade(x, np.random.default_rng(0))
    assert abs(c.mean() - x.mean()) < 0.02
    assert (c[:, :, 1:] - c[:, :, :-1]).abs().mean() < (x[:, :, 1:] - x[:, :, :-1]).abs().mean() / 2


def test_crops_are_deterministic_and_split_is_stable(tmp_path):
    src = make_source(DataConfig(), tmp_path)
    tr, va = split(src, 3)
    assert len(va) == 3 and not set(tr) & set(va) and split(src, 3) == (tr, va)
    ds = TrainCrops(src, tr, 32, seed=1)
    c1, t1 = ds[123]
    c2, t2 = ds[123]
    assert torch.equal(c1, c2) and torch.equal(t1, t2) and t1.shape == (1, 32, 32)
    assert not torch.equal(ds[124][1], t1)
    with pytest.raises(ValueError, match="divisible by the task factor"):
        TrainCrops(src, tr, 30)
    with pytest.raises(ImageError, match="smaller than data.crop_size"):
        TrainCrops(src, tr, 4096)
