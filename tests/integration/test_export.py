"""ONNX export round trip and sampling with ONNX Runtime doing the network calls."""

import numpy as np
import torch

import condiff
from condiff.data import read_image
from condiff.export import load_onnx
from tests.conftest import run_cli


def test_export_round_trip_and_onnxruntime_engine(tiny_run, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    p = run_cli("export", "--checkpoint", str(tiny_run), "--output", str(onnx_path))
    assert "relative error" in p.stdout and "opset 18" in p.stdout
    err = float(p.stdout.split("relative error ")[1].split()[0])
    assert err < 1e-4
    assert onnx_path.is_file() and onnx_path.with_suffix(".json").is_file()

    # the same sampler, network in ONNX Runtime vs PyTorch: same samples within float tolerance
    torch_pipe = condiff.load(tiny_run, device="cpu")
    ort_pipe = load_onnx(onnx_path)
    cond = torch.rand(2, 1, 24, 40) * 2 - 1  # larger than the 16px window: tiled, non-square
    a = torch_pipe(cond, steps=6, generator=torch.Generator().manual_seed(0))
    b = ort_pipe(cond, steps=6, generator=torch.Generator().manual_seed(0))
    assert (a - b).abs().max() < 1e-3

    # and through the CLI, on a real file
    img = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((20, 28)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "out"
    run_cli(
        "sample",
        "--engine",
        "onnxruntime",
        "--model",
        str(onnx_path),
        "--input",
        str(img),
        "--output",
        str(out),
        "--steps",
        "4",
        "--no-progress",
    )
    assert read_image(out / "in.png")[0].shape == (20, 28, 1)
    bad = run_cli(
        "sample", "--engine", "onnxruntime", "--input", str(img), "--output", str(out), check=False
    )
    assert bad.returncode == 2 and "--model" in bad.stderr
