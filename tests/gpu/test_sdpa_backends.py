"""The "sdpa-flash" and "sdpa-safe" attention kernels where cuDNN's SDPA backward is known to make
NaNs on Hopper: 64 tokens (the spec network's deepest level at 64 px crops), heads of 32, bf16,
and every logit of a row strongly negative (pytorch/pytorch#196678). Their gradients stay finite,
dk and dv match float64.
`python scripts/sdpa_probe.py` prints every backend's answer side by side."""

import math

import pytest
import torch

pytestmark = pytest.mark.gpu
DEV = torch.device("cuda")


def very_negative_rows(b: int, h: int, n: int, d: int) -> list[torch.Tensor]:
    """q, k, v whose every logit is about -120 (each row's logsumexp below ln(FLT_MIN))."""
    g = torch.Generator(DEV).manual_seed(0)
    q, k = (torch.randn(b, h, n, d, device=DEV, generator=g) * 0.1 for _ in range(2))
    v = torch.randn(b, h, n, d, device=DEV, generator=g)
    q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(d)
    return [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]


def float64_grads(q, k, v, dout):
    q, k, v = (t.detach().double().requires_grad_() for t in (q, k, v))
    p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), -1)
    (p @ v).backward(dout.double())
    return q.grad, k.grad, v.grad


@pytest.mark.parametrize("kernel", ["sdpa-flash", "sdpa-safe"])
@pytest.mark.parametrize("n", [64, 192, 256, 1024])
def test_gradients_stay_finite_where_every_logit_is_very_negative(kernel, n):
    """sdpa-safe keeps cuDNN at 256 and 1,024 tokens (finite there in session 20's probe)."""
    from condiff.nn.attention import attention, attention_kernel

    q, k, v = very_negative_rows(4, 8, n, 32)
    with attention_kernel(kernel):
        out = attention(q, k, v)
    dout = torch.randn_like(out)
    out.backward(dout)
    for name, got, ref in zip(
        "qkv", (q.grad, k.grad, v.grad), float64_grads(q, k, v, dout), strict=True
    ):
        assert torch.isfinite(got).all(), f"d{name} has non-finite values at {n} tokens"
        if name == "q":  # dq's first channel is -680 x (a sum that cancels to ~0): a bf16
            continue  # output's rounding makes it O(1) wrong in any kernel (CPU flash: 3.2)
        err = ((got.double() - ref).norm() / ref.norm().clamp_min(1e-12)).item()
        assert err < 5e-2, (name, n, err)


@pytest.mark.parametrize("kernel", ["sdpa-flash", "sdpa-safe"])
def test_the_flash_op_route_is_taken_and_cached_by_compile(kernel, tmp_path, monkeypatch):
    """In bf16 on this card the kernels call the flash op itself (no sdpa_kernel block in the
    graph), and a second compile of a block trained with them is served by the AOTAutograd
    cache (pytorch/pytorch#194007: the block made every warm start re-trace; session 22)."""
    from torch._dynamo.utils import counters

    from condiff.nn.attention import attention_kernel, flash_route
    from condiff.nn.blocks import AttentionBlock

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    block = AttentionBlock(64, num_heads=8).to(DEV)
    x = torch.randn(4, 64, 8, 8, device=DEV)  # 64 tokens: the flash route in both kernels
    seen = []
    with attention_kernel(kernel):
        assert flash_route(*very_negative_rows(1, 8, 64, 8)) == "flash-op"
        for _ in range(2):
            torch._dynamo.reset()
            counters.clear()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = torch.compile(block)(x)
            out.float().sum().backward()
            seen.append(dict(counters["aot_autograd"]))
    torch._dynamo.reset()
    assert "autograd_cache_bypass" not in seen[0], seen
    assert seen[1].get("autograd_cache_hit") == 1, seen
