"""CUDA paths: bf16/channels_last, compiled and CUDA-graphed sampling agree with eager; training runs."""

import pytest
import torch

from condiff import ConditionalUNet, NoiseSchedule, sample
from condiff.config import RunConfig
from condiff.infer.graphs import GraphedSampler

pytestmark = pytest.mark.gpu
DEV = torch.device("cuda")


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_seed_default_bf16_channels_last_matches_fp32():
    torch.manual_seed(0)
    m = ConditionalUNet().to(DEV).eval()
    x, t = torch.randn(2, 2, 120, 120, device=DEV), torch.tensor([10, 900], device=DEV)
    with torch.no_grad():
        ref = m(x, t)
        mc = m.to(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = mc(x.contiguous(memory_format=torch.channels_last), t)
    assert rel(out, ref) < 3e-2  # measured 0.024 on an H200 (bf16 has 8 mantissa bits)


def test_compiled_and_graphed_sampling_match_eager():
    torch.manual_seed(0)
    m = ConditionalUNet.from_preset("seed-default").to(DEV).eval()
    sched = NoiseSchedule("linear")
    cond = torch.randn(2, 1, 120, 120, device=DEV)
    xT = torch.randn(2, 1, 120, 120, device=DEV)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager = sample(m, cond, sched, target_channels=1, steps=10, x_T=xT)
        compiled = torch.compile(m)
        comp = sample(compiled, cond, sched, target_channels=1, steps=10, x_T=xT)
    g = GraphedSampler(
        compiled,
        sched,
        cond,
        xT,
        sampler="dpmpp_2m",
        steps=10,
        objective="eps",
        spacing="trailing",
        clip=True,
        autocast_dtype=torch.bfloat16,
    )
    graphed = g(cond, xT)
    assert rel(comp, eager) < 3e-2
    assert rel(graphed, eager) < 3e-2
    cond2, xT2 = torch.randn_like(cond), torch.randn_like(xT)  # replay with new inputs
    with torch.autocast("cuda", dtype=torch.bfloat16):
        eager2 = sample(m, cond2, sched, target_channels=1, steps=10, x_T=xT2)
    assert rel(g(cond2, xT2), eager2) < 3e-2


def test_fit_on_cuda(tmp_path):
    from condiff.train import fit
    from tests.conftest import tiny_config

    cfg = RunConfig.from_dict(tiny_config(tmp_path / "r", train={"steps": 30, "device": "cuda"}))
    res = fit(cfg, progress=False)
    assert res.step == 30 and all(h.get("loss", 0) == h.get("loss", 0) for h in res.history)
    import condiff

    pipe = condiff.load(tmp_path / "r")
    cond = torch.rand(3, 1, 40, 56, device=DEV) * 2 - 1
    a = pipe(cond, steps=5, generator=torch.Generator(DEV).manual_seed(0))  # eager (first call)
    b = pipe(cond, steps=5, generator=torch.Generator(DEV).manual_seed(0))  # captured graph
    assert a.shape == (3, 1, 40, 56) and rel(b, a) < 3e-2


def test_fit_with_cuda_graphs_replays_the_compiled_step(tmp_path, capsys):
    """train.cuda_graphs: the compiled forward and backward replay as CUDA graphs and train the
    weights the compiled step trains (fp32), on each step's own batch: a replay on a stale input
    would log other losses and move the weights elsewhere."""
    from condiff.train import fit
    from tests.conftest import tiny_config

    runs, losses = {}, {}
    for name, graphs in (("compiled", False), ("graphed", True)):
        train = {"steps": 12, "device": "cuda", "compile": True, "cuda_graphs": graphs}
        train |= {"precision": "fp32", "ckpt_every": 12}
        cfg = RunConfig.from_dict(tiny_config(tmp_path / name, train=train))
        res = fit(cfg, progress=False)
        assert res.step == 12
        runs[name] = res.checkpoint
        losses[name] = [h["loss"] for h in res.history if "loss" in h]
    assert "the compiled forward and backward replay as CUDA graphs" in capsys.readouterr().out
    from safetensors.torch import load_file

    a = load_file(str(runs["compiled"] / "model.safetensors"))
    b = load_file(str(runs["graphed"] / "model.safetensors"))
    worst = max(rel(b[k], a[k]) for k in a if a[k].float().norm() > 0)
    # Session 19 (H100): 1.4e-3. The compiled step is not bit-reproducible itself (atomics in the
    # convolution and GroupNorm backward), and Adam's normalised update turns those float-level
    # gradient differences into lr-sized steps on near-zero gradients; a wrong replay is O(1).
    assert worst < 1e-2, worst
    assert len(losses["graphed"]) == len(losses["compiled"]) >= 2
    for lg, lc in zip(losses["graphed"], losses["compiled"], strict=True):
        assert abs(lg - lc) < 1e-2 * abs(lc), (losses["graphed"], losses["compiled"])
