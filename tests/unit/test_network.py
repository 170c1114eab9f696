"""The network against the spec's walkthrough (conditional-unet-seed.md + READING.md)."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from condiff import ConditionalUNet
from condiff.nn import AttentionBlock, ResidualBlock, SinusoidalPositionalEncoding


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_default_constructor_is_the_spec_defaults():
    m = ConditionalUNet()
    assert m.config == dict(
        in_img_channels=2,
        out_img_channels=1,
        base_channels=64,
        channel_mults=(1, 2, 3, 4),
        num_res_blocks_per_level=2,
        attention_resolutions=(120, 60),
        dropout_rate=0.1,
        time_emb_dim=256,
        time_emb_mlp_dim=1024,
        num_heads_attn=8,
        num_groups_norm=32,
        initial_img_resolution=120,
    )


@pytest.mark.parametrize(
    "preset,count", [("seed-default", 19_483_137), ("seed-rgb480", 20_802_435)]
)
def test_parameter_counts(preset, count):
    assert n_params(ConditionalUNet.from_preset(preset)) == count


def test_encoder_levels_channels_and_attention_seed_default():
    m = ConditionalUNet()
    assert m.conv_in.in_channels == 2 and m.conv_in.out_channels == 64
    outs = [lvl.res[-1].conv2.out_channels for lvl in m.encoder]
    assert outs == [64, 128, 192, 256]
    assert [len(lvl.res) for lvl in m.encoder] == [2, 2, 2, 2]
    # 120x120 input: levels run at 120, 60, 30, 15 -> attention at levels 1 and 2 only
    assert [lvl.attn is not None for lvl in m.encoder] == [True, True, False, False]
    assert [lvl.resample is not None for lvl in m.encoder] == [True, True, True, False]
    assert [p.resolution for p in m.plan if p.stage == "encoder"] == [120, 60, 30, 15]


def test_encoder_attention_seed_rgb480_matches_section_4_3():
    m = ConditionalUNet.from_preset("seed-rgb480")
    assert m.conv_in.in_channels == 6 and m.conv_out.out_channels == 3
    assert [lvl.attn is not None for lvl in m.encoder] == [False, False, True, True]
    assert [lvl.attn is not None for lvl in m.decoder] == [True, True, False, False]
    assert [lvl.attn.channels for lvl in m.encoder if lvl.attn] == [192, 256]


def test_decoder_first_block_inputs_and_upsamples():
    m = ConditionalUNet()
    firsts = [lvl.res[0].conv1.in_channels for lvl in m.decoder]
    assert firsts == [512, 448, 320, 192]
    assert [lvl.res[0].conv1.out_channels for lvl in m.decoder] == [256, 192, 128, 64]
    assert [lvl.res[1].conv1.in_channels for lvl in m.decoder] == [256, 192, 128, 64]
    assert [lvl.resample is not None for lvl in m.decoder] == [True, True, True, False]
    assert [lvl.attn is not None for lvl in m.decoder] == [False, False, True, True]
    # residual skips are 1x1 convs exactly where channels change
    assert isinstance(m.decoder[0].res[0].skip, nn.Conv2d)
    assert isinstance(m.decoder[0].res[1].skip, nn.Identity)


def test_bottleneck_is_res_attn_res():
    m = ConditionalUNet()
    assert isinstance(m.bottleneck_res1, ResidualBlock)
    assert isinstance(m.bottleneck_attn, AttentionBlock)
    assert isinstance(m.bottleneck_res2, ResidualBlock)
    assert m.bottleneck_res1.conv1.in_channels == 256 == m.bottleneck_res2.conv2.out_channels
    assert m.bottleneck_attn.num_heads == 8


def test_time_mlp_and_output_head():
    m = ConditionalUNet()
    assert [type(x) for x in m.time_mlp] == [nn.Linear, nn.SiLU, nn.Linear]
    assert m.time_mlp[0].in_features == 256 and m.time_mlp[2].out_features == 1024
    assert m.conv_out_norm.num_groups == 32 and m.conv_out_norm.num_channels == 64
    assert isinstance(m.quant, torch.ao.quantization.QuantStub)
    assert isinstance(m.dequant, torch.ao.quantization.DeQuantStub)


def test_full_model_forward_batch1_nonsquare():
    m = ConditionalUNet().eval()
    with torch.no_grad():
        y = m(torch.randn(1, 2, 24, 40), torch.tensor([10]))
    assert y.shape == (1, 1, 24, 40)
    assert torch.isfinite(y).all()


def test_attention_block_equals_multihead_attention():
    torch.manual_seed(0)
    blk = AttentionBlock(32, num_heads=4, num_groups=8).eval()
    x = torch.randn(2, 32, 6, 5)
    qkv = blk.qkv(blk.norm(x)).flatten(2).transpose(1, 2)
    q, k, v = qkv.chunk(3, dim=-1)
    o, _ = blk.mha(q, k, v, need_weights=False)
    ref = x + blk.proj_out(o.transpose(1, 2).reshape(2, 32, 6, 5))
    torch.testing.assert_close(blk(x), ref, atol=1e-5, rtol=1e-5)


def test_sinusoidal_encoding():
    enc = SinusoidalPositionalEncoding(8)
    e = enc(torch.tensor([0.0, 3.0]))
    assert e.shape == (2, 8)
    torch.testing.assert_close(e[0], torch.tensor([0.0] * 4 + [1.0] * 4))
    assert e[1, 0] == pytest.approx(torch.sin(torch.tensor(3.0)).item())


def test_gradients_reach_every_parameter():
    m = ConditionalUNet.from_preset("tiny")
    m(torch.randn(2, 2, 16, 16), torch.tensor([1, 500])).square().mean().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_dropout_only_in_training():
    m = ConditionalUNet.from_preset("tiny", dropout_rate=0.5)
    x, t = torch.randn(1, 2, 16, 16), torch.tensor([3])
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x, t), m(x, t))
    m.train()
    with torch.no_grad():
        assert not torch.equal(m(x, t), m(x, t))


def test_channels_last_and_bf16_autocast_agree():
    torch.manual_seed(0)
    m = ConditionalUNet.from_preset("tiny").eval()
    x, t = torch.randn(2, 2, 16, 24), torch.tensor([5, 900])
    with torch.no_grad():
        ref = m(x, t)
        cl = m.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last), t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf = m(x, t)
    torch.testing.assert_close(cl, ref, atol=1e-5, rtol=1e-5)
    assert (bf.float() - ref).norm() / ref.norm() < 3e-2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(base_channels=20), "num_groups_norm"),
        (dict(num_heads_attn=7, num_groups_norm=8), "num_heads_attn"),
        (dict(initial_img_resolution=100), "divisible by 8"),
        (dict(dropout_rate=1.5), "dropout_rate"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ConditionalUNet(**kwargs)


def test_bad_inputs_have_clear_errors():
    m = ConditionalUNet.from_preset("tiny")
    with pytest.raises(ValueError, match="expects in_img_channels=2"):
        m(torch.randn(1, 3, 16, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="divisible by 2"):
        m(torch.randn(1, 2, 16, 15), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"time must have shape \(B,\)"):
        m(torch.randn(2, 2, 16, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="unknown preset"):
        ConditionalUNet.from_preset("huge")


def test_attention_kernel_selection_falls_back_to_sdpa_without_triton_and_cuda():
    from condiff.nn import attention as attn

    if attn.triton_available():
        pytest.skip("Triton and CUDA are present")
    assert attn.get_attention_kernel() == "sdpa"  # "auto" on this machine
    with pytest.raises(ValueError, match="triton package, a CUDA device of compute capability"):
        attn.set_attention_kernel("triton")
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        attn.set_attention_kernel("flash")
    assert attn.get_attention_kernel() == "sdpa"  # failed selections change nothing


def test_triton_needs_compute_capability_8(monkeypatch):
    """bf16 tensor-core products need Ampere or newer: "auto" keeps SDPA on older GPUs."""
    import importlib.util

    from condiff.nn import attention as attn

    monkeypatch.setattr(torch.library, "triton_op", object(), raising=False)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    try:
        for cap, expected in (((7, 5), False), ((8, 0), True), ((9, 0), True)):
            monkeypatch.setattr(torch.cuda, "get_device_capability", lambda cap=cap: cap)
            attn.triton_available.cache_clear()
            assert attn.triton_available() is expected, cap
    finally:
        monkeypatch.undo()
        attn.triton_available.cache_clear()
    if not torch.cuda.is_available():  # the real answer is back once the patches are gone
        assert not attn.triton_available()


def test_sdpa_flash_keeps_sdpa_off_cudnn_inside_the_call_only(monkeypatch):
    """ "sdpa-flash" where the flash op does not apply on CUDA (fp32, odd head sizes): SDPA with
    its cuDNN backend off while the attention runs (the backward's NaNs on Hopper at 64 tokens,
    session 19), the same numbers, and the backends as they were after it. The route is forced
    here: this CPU has no cuDNN, so its own route is plain SDPA."""
    from condiff.nn import attention as attn

    seen = []
    plain = F.scaled_dot_product_attention

    def recording(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return plain(*args, **kwargs)

    m = ConditionalUNet.from_preset("tiny").eval()
    x, t = torch.randn(2, 2, 16, 16), torch.tensor([5, 700])
    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    with torch.no_grad():
        with attn.attention_kernel("sdpa"):
            ref = m(x, t)
        assert seen and all(seen)  # PyTorch's own choice: cuDNN allowed
        seen.clear()
        with attn.attention_kernel("sdpa-flash"):
            assert attn.flash_route(*torch.randn(3, 1, 2, 16, 8).unbind(0)) == "sdpa"  # CPU
            monkeypatch.setattr(attn, "flash_route", lambda q, k, v: "no-cudnn")
            out = m(x, t)
    assert seen and not any(seen)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    torch.testing.assert_close(out, ref)


class _CudaLike:
    """What :func:`flash_route` reads of a tensor, for inputs this CPU cannot make."""

    is_cuda = True

    def __init__(self, dtype, head=32, last_stride=1):
        self.dtype, self.shape, self.last_stride = dtype, (4, 8, 64, head), last_stride

    def stride(self, dim):
        return self.last_stride


def test_flash_route_calls_the_flash_op_only_where_flash_runs(monkeypatch):
    """On a CUDA device of compute capability 8.0 on, half-precision q, k, v with a head size
    that is a multiple of 8 (up to 256) and a contiguous last dimension go to the flash op
    directly (no sdpa_kernel block in a compiled graph); anything else keeps the block."""
    from condiff.nn import attention as attn

    bf16, f16, f32 = torch.bfloat16, torch.float16, torch.float32
    monkeypatch.setattr(attn, "_cuda_flash", True)
    route = lambda q: attn.flash_route(q, q, q)  # noqa: E731
    assert route(_CudaLike(bf16)) == route(_CudaLike(f16, head=8)) == "flash-op"
    assert route(_CudaLike(bf16, head=256)) == "flash-op"
    for q in (_CudaLike(f32), _CudaLike(bf16, head=12), _CudaLike(bf16, head=264),
              _CudaLike(bf16, last_stride=2)):  # fmt: skip
        assert route(q) == "no-cudnn", (q.dtype, q.shape, q.last_stride)
    assert attn.flash_route(_CudaLike(bf16), _CudaLike(f16), _CudaLike(bf16)) == "no-cudnn"
    monkeypatch.setattr(attn, "_cuda_flash", False)  # a card before Ampere
    assert route(_CudaLike(bf16)) == "no-cudnn"
    assert route(torch.randn(1, 2, 16, 8, dtype=bf16)) == "sdpa"  # no cuDNN on a CPU


def test_sdpa_safe_allows_cudnn_only_where_the_token_count_is_a_multiple_of_128(monkeypatch):
    """ "sdpa-safe": cuDNN stays allowed at 128, 256, 4,096 tokens (finite and fastest there on
    an H100, session 20) and is kept off at 64 and 192 (its backward's NaNs), with the same
    numbers as plain SDPA either way (the cuDNN-off route forced, as above)."""
    from condiff.nn import attention as attn

    seen = {}
    plain = F.scaled_dot_product_attention

    def recording(q, *args, **kwargs):
        seen[q.shape[-2]] = torch.backends.cuda.cudnn_sdp_enabled()
        return plain(q, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    monkeypatch.setattr(attn, "flash_route", lambda q, k, v: "no-cudnn")
    for n in (64, 128, 192, 256, 4096):
        q, k, v = torch.randn(3, 1, 2, n, 8).unbind(0)
        with attn.attention_kernel("sdpa-safe"):
            out = attn.attention(q, k, v)
        torch.testing.assert_close(out, plain(q, k, v))
    assert seen == {64: False, 128: True, 192: False, 256: True, 4096: True}
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_a_compiled_sdpa_safe_graph_is_served_by_the_autograd_cache(tmp_path, monkeypatch):
    """torch.compile's AOTAutograd cache serves a second compile of an attention block trained
    with "sdpa-safe": an sdpa_kernel block inside the graph made it bypass the cache, so every
    warm start traced the joint graph again (pytorch/pytorch#194007; session 22)."""
    from torch._dynamo.utils import counters

    from condiff.nn import attention as attn
    from condiff.nn.blocks import AttentionBlock

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    block, x = AttentionBlock(16, num_heads=2, num_groups=4), torch.randn(2, 16, 8, 8)
    seen = []
    with attn.attention_kernel("sdpa-safe"):
        for _ in range(2):
            torch._dynamo.reset()
            counters.clear()
            torch.compile(block)(x).sum().backward()
            seen.append(dict(counters["aot_autograd"]))
    assert "autograd_cache_bypass" not in seen[0], seen
    assert seen[1].get("autograd_cache_hit") == 1, seen
    torch._dynamo.reset()


def test_registered_kernel_is_what_attention_blocks_call():
    from condiff.nn import attention as attn

    calls = []

    def counting(q, k, v):
        calls.append(tuple(q.shape))
        return attn.sdpa(q, k, v)

    attn.register_kernel("_test_counting", counting)
    m = ConditionalUNet.from_preset("tiny").eval()
    x, t = torch.randn(1, 2, 16, 16), torch.tensor([5])
    with torch.no_grad():
        ref = m(x, t)
        with attn.attention_kernel("_test_counting"):
            out = m(x, t)
    assert attn._active == "auto"  # the selection before the block is back
    assert calls and all(len(s) == 4 for s in calls)
    torch.testing.assert_close(out, ref)


def test_compile_cache_outlives_the_process(monkeypatch, tmp_path):
    """Inductor's cache goes to $CONDIFF_CACHE/inductor (not /tmp), unless the user named one."""
    import os

    from condiff.nn.compiled import compile_cache_dir, compile_module

    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("CONDIFF_CACHE", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "inductor"
    compile_module(torch.nn.Linear(2, 2))  # lazy: nothing compiles until the first call
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("CONDIFF_CACHE")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    assert compile_cache_dir() == Path.home() / ".cache" / "condiff" / "inductor"
