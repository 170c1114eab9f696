"""ONNX export round trip and sampling with ONNX Runtime doing the network calls."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import condiff
from condiff.data import read_image
from condiff.export import export_onnx, load_onnx
from tests.conftest import run_cli


def test_export_round_trip_and_onnxruntime_engine(tiny_run, tmp_path):
    onnx_path = tmp_path / "tiny.onnx"
    p = run_cli("export", "--checkpoint", str(tiny_run), "--output", str(onnx_path))
    assert "relative error" in p.stdout and "opset 23" in p.stdout
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

    # the numpy-only engine (no torch): same samplers and tiling, given the same starting noise
    from condiff.export.runtime import OrtPipeline

    x_T = torch.randn(2, 1, 24, 40, generator=torch.Generator().manual_seed(0))
    c = ort_pipe(cond, steps=6, sampler="ddim", generator=torch.Generator().manual_seed(0))
    d = OrtPipeline(onnx_path)(cond.numpy(), steps=6, sampler="ddim", noise=x_T.numpy())
    assert isinstance(d, np.ndarray) and d.shape == (2, 1, 24, 40)
    assert np.abs(c.numpy() - d).max() < 1e-4
    k3 = OrtPipeline(onnx_path)(cond.numpy()[:1], steps=3, num_samples=3, rng=1)
    assert k3.shape == (1, 3, 1, 24, 40) and np.abs(k3[0, 0] - k3[0, 1]).max() > 1e-3

    # and through the CLI, on a real file, in a Python where torch cannot be imported
    img = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((20, 28)) * 255).astype(np.uint8)).save(img)
    out = tmp_path / "out"
    no_torch = (
        "import sys; sys.modules['torch'] = None; from condiff.cli import main; sys.exit(main())"
    )
    args = ["sample", "--engine", "onnxruntime", "--model", str(onnx_path), "--input", str(img)]
    args += ["--output", str(out), "--steps", "4", "--no-progress", "--upscale", "2"]
    p = subprocess.run([sys.executable, "-c", no_torch, *args], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert read_image(out / "in.png")[0].shape == (40, 56, 1)
    p = subprocess.run(
        [sys.executable, "-c", no_torch.replace("main()", "main(['info'])")],
        capture_output=True,
        text=True,
    )
    assert p.returncode != 0 and "torch" in p.stderr  # the guard really blocks torch
    bad = run_cli(
        "sample", "--engine", "onnxruntime", "--input", str(img), "--output", str(out), check=False
    )
    assert bad.returncode == 2 and "--model" in bad.stderr


def test_quantize_writes_a_sampling_int8_model_and_gate_rejects_broken_calibration(
    tiny_run, tmp_path
):
    import pytest

    from condiff.export import GateError, quantize_run
    from condiff.export.quantize import trajectory_inputs

    out = tmp_path / "int8.onnx"
    p = run_cli(
        "quantize",
        "--checkpoint",
        str(tiny_run),
        "--output",
        str(out),
        "--max-side",
        "48",
        "--calib-images",
        "2",
        "--gate-steps",
        "6",
        "--max-loss-db",
        "3",
    )
    assert "accuracy gate:" in p.stdout and out.is_file()
    import onnx

    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {
        "QuantizeLinear",
        "DequantizeLinear",
    } <= ops and "Attention" in ops  # attention stays one float op
    pipe = load_onnx(out)
    x = pipe(torch.rand(1, 1, 24, 24) * 2 - 1, steps=4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1, 1, 24, 24) and torch.isfinite(x).all()

    # a deliberately broken calibration: inputs blown up 1000x, so every activation range is wrong
    good = trajectory_inputs(condiff.load(tiny_run, device="cpu"), [torch.rand(1, 24, 24) * 2 - 1])
    broken = [{"x_concat": d["x_concat"] * 1e3, "time": d["time"]} for d in good]
    # measured: good calibration loses 0.02 dB here, the broken one 3.4 dB (first and last convs
    # float; shrinking the inputs 1000x no longer broke it, since the float first conv's bias
    # dominates its output then)
    # both quantize one fp32 export, written once (what `bench --cpu-deploy` does)
    fp32, _ = export_onnx(tiny_run, tmp_path / "fp32.onnx")
    _, report = quantize_run(
        tiny_run,
        tmp_path / "good.onnx",
        calibration_inputs=good,
        max_side=48,
        gate_steps=6,
        max_loss_db=0.3,
        fp32_onnx=fp32,
    )
    assert report.loss_db < 0.3 and (tmp_path / "good.onnx").is_file()
    with pytest.raises(GateError, match="int8 model refused") as refused:
        quantize_run(
            tiny_run,
            tmp_path / "broken.onnx",
            calibration_inputs=broken,
            max_side=48,
            gate_steps=6,
            max_loss_db=0.3,
            fp32_onnx=fp32,
        )
    assert not (tmp_path / "broken.onnx").exists()
    assert "int8 vs fp32 samples" in str(refused.value)


def test_cpu_deploy_bench_table_has_every_path(tiny_run, tmp_path):
    p = run_cli(
        "bench",
        "--cpu-deploy",
        "--checkpoint",
        str(tiny_run),
        "--batches",
        "1",
        "--deploy-steps",
        "2",
        "--repeats",
        "1",
        "--json",
        str(tmp_path / "deploy.json"),
        "--deploy-out",
        str(tmp_path / "models"),
    )
    import json

    rows = {r["path"]: r for r in json.loads((tmp_path / "deploy.json").read_text())["rows"]}
    assert set(rows) >= {
        "eager fp32",
        "compiled fp32",
        "onnxruntime fp32",
        "onnxruntime int8 (QDQ)",
        "onnxruntime fp32, numpy engine",
    }
    assert all(r["call_b1_ms"] > 0 and r["sample_b1_s"] > 0 for r in rows.values())
    # the same fp32 network with torch or numpy doing the sampler arithmetic: same samples
    assert rows["onnxruntime fp32, numpy engine"]["psnr_vs_fp32_b1"] > 50
    assert rows["compiled fp32"]["psnr_vs_fp32_b1"] > 50
    assert "int8 accuracy gate" in p.stdout
    # the machine it ran on, and the advice for it
    info = json.loads((tmp_path / "deploy.json").read_text())
    assert info["cpu"]["cores"] >= 1 and "CPU: " in p.stdout
    assert info["fastest"]["1"] in rows
    assert f"fastest accurate path on this CPU at batch 1: {info['fastest']['1']}" in p.stdout
    assert f"--checkpoint {tiny_run}" in p.stdout  # the command to use, for this run


def test_fastest_path_keeps_only_accurate_paths():
    from condiff.bench.cpu_deploy import fastest_paths

    rows = [
        {"path": "eager fp32", "sample_b1_s": 1.0, "psnr_vs_fp32_b1": float("inf")},
        {"path": "compiled bf16 (autocast)", "sample_b1_s": 0.4, "psnr_vs_fp32_b1": 30.0},
        {"path": "onnxruntime fp32", "sample_b1_s": 0.6, "psnr_vs_fp32_b1": 140.0},
        {"path": "onnxruntime int8 (QDQ)", "sample_b1_s": 0.5, "psnr_vs_fp32_b1": 45.0},
    ]
    path, x = fastest_paths(rows, (1,), int8_ok=True)[1]
    assert path == "onnxruntime int8 (QDQ)" and x == pytest.approx(2.0)
    # int8 failed its gate; bf16 drifted below 40 dB: ONNX Runtime fp32 is the advice
    assert fastest_paths(rows, (1,), int8_ok=False)[1][0] == "onnxruntime fp32"
