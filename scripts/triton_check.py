"""Compile condiff's Triton attention kernels for an H100/H200 (sm_90) on a machine without a GPU,
and count the SASS instructions that matter (loads, matrix products, exponentials, barriers).

    pip install --target /tmp/tsite triton==3.5.0      # once; the wheel ships ptxas and nvdisasm
    PYTHONPATH=/tmp/tsite:src python scripts/triton_check.py [fwd|bwd|dq] ['{"FMA_EXP": false}']

A compile error here is one the GPU would raise (session 7 lost a device call to one); the
instruction counts show what a change did to the code before any device time is spent (e.g. the
2-byte ``LDG.E.U16`` loads that padded heads removed). Correctness needs the interpreter
(``TRITON_INTERPRET=1``, fp16 only) or a GPU.
"""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from condiff.nn import triton_attention as ta

KERNELS = {
    "fwd": (
        ta._attn_fwd,
        dict(
            D=8, DP=16, BM=128, BN=32, ROWSUM_MMA=True, MAX_BOUND=True, STORE_LSE=True,
            FMA_EXP=True, TRUNC=0,
        ),
        ("Q", "K", "V", "Out"),
        ("LSE", "KNORM"),
        (4, 2),
    ),
    "bwd": (
        ta._attn_bwd,
        dict(D=8, DP=16, BM=32, BN=256, DELTA_MMA=False, FMA_EXP=False, TRUNC=0, DQ_ATOMIC=False),
        ("Q", "K", "V", "DO", "DK", "DV"),
        ("LSE", "DELTA", "DQ"),
        (4, 3),
    ),
    "dq": (
        ta._attn_bwd_dq,
        dict(D=8, DP=16, BM=64, BN=64, FMA_EXP=False, TRUNC=0),
        ("Q", "K", "V", "DO", "DQ"),
        ("LSE", "DELTA"),
        (4, 2),
    ),
}  # fmt: skip
OPS = r"(LDGSTS[.A-Z0-9]*|LDG[.A-Z0-9]*|STS[.A-Z0-9]*|LDS[.A-Z0-9]*|HGMMA[.A-Z0-9x]*|HMMA[.A-Z0-9]*|MUFU[.A-Z0-9]*|F2FP[.A-Z0-9]*|RED[.A-Z0-9]*|BAR[.A-Z0-9]*)"


def main() -> None:
    which = sys.argv[1] if len(sys.argv) > 1 else "fwd"
    fn, const, halves, floats, (warps, stages) = KERNELS[which]
    const = {**const, **(json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})}
    names = list(fn.arg_names)

    def kind(n: str) -> str:
        if n in const:
            return "constexpr"
        if n in halves:
            return "*bf16"
        if n in floats:
            return "*fp32"
        return "fp32" if "scale" in n else "i32"

    # pointers and the batch/head strides of contiguous (B, H, N, 16) inputs divide by 16
    aligned = [n for n in names if kind(n).startswith("*") or re.fullmatch(r"s\w+[bhn]", n)]
    src = ASTSource(
        fn=fn,
        signature={n: kind(n) for n in names},
        constexprs={(names.index(k),): v for k, v in const.items()},
        attrs={(names.index(n),): [["tt.divisibility", 16]] for n in aligned},
    )
    k = triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages)
    )
    cubin = Path("/tmp/condiff_kernel.cubin")
    cubin.write_bytes(k.asm["cubin"])
    nvdisasm = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
    sass = subprocess.run([str(nvdisasm), "-c", str(cubin)], capture_output=True, text=True).stdout
    print(f"{which} {const}: compiled for sm_90")
    for op, n in collections.Counter(re.findall(OPS, sass)).most_common():
        print(f"  {op:<32}{n:>5}")


if __name__ == "__main__":
    main()
