"""What the checkpoint manifest costs to check (issue 29): the seed-default network's
checkpoint (model + EMA + an AdamW-sized state), loaded for inference by ``condiff.load`` with
its manifest checked, and the same checkpoint without one (weights read whole, as before).

    python scripts/verify_cost.py [--repeats 5]

Prints a table: seconds per load (median), the manifest check alone, and the file sizes.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from condiff import checkpoint as ckpt
from condiff import load
from condiff.config import RunConfig
from condiff.train.setup import build_model


def timed(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        ckpt._VERIFIED.clear()  # as a fresh process: nothing hashed yet
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    cfg = RunConfig.from_dict({"model": {"preset": "seed-default"}})
    net = build_model(cfg)
    sd = net.state_dict()
    state = {"opt": {k: (torch.zeros_like(v), torch.zeros_like(v)) for k, v in sd.items()}}
    root = Path(tempfile.mkdtemp())
    try:
        with_m = ckpt.save_checkpoint(
            root / "a", 1, config=cfg.to_dict(), model=net, ema=net, state=state
        )
        without = root / "b" / with_m.name
        shutil.copytree(with_m, without)
        (without / ckpt.MANIFEST).unlink()
        warnings.simplefilter("ignore")
        sizes = {f.name: f.stat().st_size / 2**20 for f in with_m.iterdir()}
        rows = [
            ("load(), manifest checked", timed(lambda: load(with_m, device="cpu"), a.repeats)),
            ("load(), no manifest (weights read whole)", timed(lambda: load(without, device="cpu"), a.repeats)),
            ("manifest check alone (no state.pt)", timed(lambda: ckpt.verify_manifest(with_m, skip=("state.pt",)), a.repeats)),
            ("manifest check with state.pt (resume)", timed(lambda: ckpt.verify_manifest(with_m), a.repeats)),
        ]  # fmt: skip
        params = sum(v.numel() for v in sd.values())
        print(f"seed-default: {params:,} parameters; files (MiB): "
              + ", ".join(f"{k} {v:.1f}" for k, v in sorted(sizes.items())))  # fmt: skip
        print(f"| what | seconds (median of {a.repeats}) |\n|---|---|")
        for name, s in rows:
            print(f"| {name} | {s:.3f} |")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
