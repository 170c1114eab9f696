"""Issue 24's probe on a CUDA machine: where the recipe's training step and the tiled megapixel
mean spend their time, and what the candidate levers do, each measured side by side in one run.

    python3 scripts/speed_probe.py attn            # kernel variants at the recipe's shapes
    python3 scripts/speed_probe.py step            # the recipe's step: eager / compiled / graphs
    python3 scripts/speed_probe.py tiles           # 1024^2 mean: tile batch, overlap, profile

Every part prints a table; ``--json`` keeps the numbers. Kernel variants (``trunc``, ``fma_exp``)
are the switches of :func:`condiff.nn.triton_attention.configure`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # attention_bench: the kernel checks

DEV = torch.device("cuda")
VARIANTS = {
    "shipped": {},
    "trunc1": {"trunc": 1},
    "trunc2": {"trunc": 2},
    "fma": {"fma_exp": True},
    "fma+trunc2": {"fma_exp": True, "trunc": 2},
}


def _ms(fn, grad_to_none=None) -> float:
    import triton

    return triton.testing.do_bench(
        fn, warmup=10, rep=60, grad_to_none=grad_to_none, return_mode="median"
    )


def _errors(ta, shape=(2, 8, 2048, 8)) -> list[float]:
    """Relative L2 errors (out, dq, dk, dv) against float64 attention."""
    from attention_bench import qkv, ref_attention, rel

    b, h, n, d = shape
    torch.manual_seed(1)
    base, (q, k, v) = qkv(b, h, n, d, grad=True)
    do = torch.randn(b, h, n, d, device=DEV, dtype=torch.bfloat16)
    out = ta.small_head_attention(q, k, v)
    out.backward(do)
    g = base.grad
    qq, kk, vv = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = ref_attention(qq, kk, vv)
    ref.backward(do.double())
    grads = [rel(g[i].view(b, n, h, d).transpose(1, 2), t.grad) for i, t in enumerate((qq, kk, vv))]
    return [rel(out, ref), *grads]


def attn(args) -> dict:
    from attention_bench import qkv

    from condiff.nn import triton_attention as ta

    shapes = {
        "train L0 (128,8,4096,8)": ((args.batch, 8, 4096, 8), True),
        "train L1 (128,8,1024,16)": ((args.batch, 8, 1024, 16), True),
        "infer L0 (441,8,4096,8)": ((441, 8, 4096, 8), False),
    }
    data = {}
    for label, (shape, grad) in shapes.items():
        base, (q, k, v) = qkv(*shape, grad=grad)
        do = torch.randn(shape, device=DEV, dtype=torch.bfloat16)
        data[label] = (shape, grad, base, q, k, v, do)
    rows, shipped = [], dict(ta._CONFIG)
    print(f"{'variant':<14}{'shape':<26}{'fwd ms':>9}{'fwd+bwd ms':>12}{'T exp/s fwd':>13}")

    def time_variant(name, opts, only=None):
        ta.configure(**{**shipped, **opts})
        row = {
            "variant": name,
            "opts": {k: list(v) if isinstance(v, tuple) else v for k, v in opts.items()},
        }
        for label, (shape, grad, base, q, k, v, do) in data.items():
            if only and label not in only:
                continue
            kernel = F.scaled_dot_product_attention if name == "sdpa" else ta.small_head_attention
            fn = lambda q=q, k=k, v=v, kernel=kernel: kernel(q, k, v)  # noqa: E731
            try:
                with torch.no_grad():
                    tf = _ms(fn)
                tb = (
                    _ms(lambda fn=fn, do=do: fn().backward(do), grad_to_none=[base])
                    if grad
                    else float("nan")
                )
            except Exception as e:  # a variant that does not compile is reported
                print(f"{name:<14}{label:<26} failed: {type(e).__name__}: {str(e)[:120]}")
                continue
            b, h, n, _ = shape
            print(
                f"{name:<14}{label:<26}{tf:>9.3f}{tb:>12.3f}{b * h * n * n / tf / 1e9:>13.2f}",
                flush=True,
            )
            row[label] = (tf, tb)
        if name != "sdpa":
            try:
                row["errors"] = _errors(ta)
                print(
                    f"{'':<14}errors out/dq/dk/dv: " + " ".join(f"{e:.2e}" for e in row["errors"])
                )
            except Exception as e:
                print(f"{name}: error check failed: {e}")
        rows.append(row)
        return row

    if args.variants:  # NAME=JSON ...: just these, on the training shapes
        for spec in args.variants:
            name, opts = spec.split("=", 1)
            time_variant(name, json.loads(opts), only=[k for k in data if k.startswith("train")])
        ta.configure(**shipped)
        return {"rows": rows}
    time_variant("sdpa", {})
    for name, opts in VARIANTS.items():
        time_variant(name, opts)
    key = "train L0 (128,8,4096,8)"
    ok = [
        r for r in rows if r["variant"] != "sdpa" and key in r and max(r.get("errors", [1])) < 8e-3
    ]
    best_f = min(ok, key=lambda r: r[key][0])
    best_b = min(ok, key=lambda r: r[key][1] - r[key][0])
    print(f"\nbest forward variant: {best_f['variant']}, best backward: {best_b['variant']}")
    fopts = {k: v for k, v in best_f["opts"].items()}
    for tile in [
        (128, 64, 4, 2),
        (128, 64, 8, 2),
        (256, 32, 8, 2),
        (64, 32, 4, 2),
        (128, 32, 4, 3),
        (64, 64, 4, 2),
        (128, 16, 4, 2),
    ]:
        time_variant(
            f"{best_f['variant']} f{tile}",
            {**fopts, "fwd": tile},
            only=[key, "infer L0 (441,8,4096,8)"],
        )
    bopts = {k: v for k, v in best_b["opts"].items()}
    for tile in [
        (64, 128, 4, 2),
        (32, 128, 4, 3),
        (64, 256, 8, 3),
        (32, 256, 8, 3),
        (16, 256, 4, 3),
        (32, 512, 8, 2),
        (64, 64, 4, 2),
    ]:
        time_variant(f"{best_b['variant']} b{tile}", {**bopts, "bwd": tile}, only=[key])
    ta.configure(**shipped)
    return {"rows": rows}


def step(args) -> dict:
    from condiff.bench.profile import profile_families
    from condiff.bench.recipe import recipe_step, time_step
    from condiff.config import load_config
    from condiff.nn import triton_attention as ta

    cfg = load_config(args.config)
    if args.kernel:
        from condiff.nn import set_attention_kernel

        set_attention_kernel(args.kernel)
    if args.attn_opts:
        ta.configure(**json.loads(args.attn_opts))
    out = []
    for mode in args.modes:
        t0 = time.perf_counter()
        try:
            model, stepfn = recipe_step(cfg, mode, DEV, args.batch)
            row = time_step(cfg, mode, model, stepfn, DEV, args.batch, args.repeats)
        except Exception as e:
            print(f"{mode}: failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
            continue
        fam = profile_families(stepfn, DEV, steps=3) if args.profile else {}
        print(
            f"{mode:<18} first step {row.first_step_s:6.1f} s  step {row.step_ms:7.1f} ms  "
            f"{row.img_s:7.1f} img/s  peak {row.peak_share:.1%}  (mode wall {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        for f, ms in fam.items():
            print(f"    {f:<32}{ms:8.2f} ms")
        out.append(
            {"mode": row.mode, "first_step_s": row.first_step_s, "img_s": row.img_s, "profile": fam}
        )
    return {"modes": out}


def tiles(args) -> dict:
    from condiff.bench.infer import _pipeline
    from condiff.bench.profile import profile_families
    from condiff.bench.timing import timer

    out = []
    for spec in args.tile_specs:  # "batch:overlap:compile"
        tb, ov, comp = spec.split(":")
        torch._dynamo.reset()
        pipe = _pipeline(None, "seed-default", 64, DEV, compile=comp == "1", graphs=True)
        pipe.tile_batch = int(tb)
        cond = torch.rand(1, pipe.cond_channels, args.size, args.size) * 2 - 1
        gen = torch.Generator(DEV)
        t0 = time.perf_counter()
        with torch.inference_mode():

            def run(p=pipe, c=cond, o=int(ov), g=gen):
                return p(c, estimate="mean", overlap=o, generator=g)

            run()
            first = time.perf_counter() - t0
            ms = 1000 * timer(DEV, run, args.repeats, warmup=2)
            fam = profile_families(run, DEV, steps=2) if args.profile else {}
        print(
            f"tile batch {tb:>4} overlap {ov:>3} compile {comp}: mean {ms:7.1f} ms (first call {first:.0f} s)",
            flush=True,
        )
        for f, v in fam.items():
            print(f"    {f:<32}{v:8.2f} ms")
        out.append({"spec": spec, "mean_ms": ms, "first_s": first, "profile": fam})
    return {"tiles": out}


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("part", choices=["attn", "step", "tiles"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--config", default="configs/sr4-gray.yaml")
    p.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    p.add_argument("--attn-opts", default=None, help="JSON for triton_attention.configure")
    p.add_argument("--kernel", default=None, help="step: attention kernel (sdpa, sdpa-safe, ...)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--tile-specs", nargs="+", default=["256:16:1", "512:16:1"])
    p.add_argument("--variants", nargs="+", default=None, help="attn: NAME=JSON configure options")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    res = {"attn": attn, "step": step, "tiles": tiles}[a.part](a)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str))


if __name__ == "__main__":
    main()
