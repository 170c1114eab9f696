"""Issue 31's target, as written: pack BSD400 plus the bundled photographs, train the tiny config
from the shards on a local S3 server (moto in server mode, through s3fs), stop it half way and
`--resume auto`, and compare its loss curve and weights with the same run from the folder.

    python scripts/shards_target.py --bsd400 ../shared/data/sr/train/bsd400 [--steps 40]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bsd400", required=True)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()

    from safetensors.torch import load_file

    from condiff import checkpoint as ckpt
    from condiff.bench.data_load import local_s3
    from condiff.config import RunConfig
    from condiff.data import export_bundled
    from condiff.data.shards import pack, pack_items
    from condiff.train import fit

    tmp = Path(tempfile.mkdtemp(prefix="condiff-target31-"))
    try:
        folder = tmp / "images"
        shutil.copytree(a.bsd400, folder)
        export_bundled(folder, "gray")
        t0 = time.perf_counter()
        index = pack(pack_items(folder, False, "cond", "target"), tmp / "packed", color="gray",
                     shard_mb=8)  # fmt: skip
        print(f"packed {index['count']} images ({len(index['shardlist'])} shards, "
              f"{index['bytes'] / 2**20:.1f} MB) in {time.perf_counter() - t0:.1f} s; "
              f"bad: {len(index['bad'])}")  # fmt: skip

        def cfg(run: Path, data: dict) -> RunConfig:
            return RunConfig.from_dict({
                "model": {"preset": "tiny"},
                "data": {"crop_size": 16, "val_count": 2, "color": "gray", **data},
                "train": {"output_dir": str(run), "steps": a.steps, "batch_size": 8,
                          "log_every": 1, "ckpt_every": a.steps // 2, "val_every": 10**6,
                          "image_every": 10**6, "warmup_steps": 2, "lr": 1e-3},
            })  # fmt: skip

        ref = fit(cfg(tmp / "folder", {"root": str(folder)}), progress=False)
        with local_s3(tmp / "packed") as url:
            assert url is not None, "needs moto[server] and s3fs"
            s3 = {"kind": "shards", "shards": url}
            cut = fit(cfg(tmp / "s3", s3), stop_after=a.steps // 2, progress=False)
            res = fit(cfg(tmp / "s3", s3), resume="auto", progress=False)

        def losses(r) -> list[float]:
            return [h["loss"] for h in r.history if "loss" in h]

        def last(run: Path) -> dict[str, torch.Tensor]:
            return load_file(
                str(ckpt.list_checkpoints(run / "checkpoints")[-1] / "model.safetensors")
            )

        lr, lc, lres = losses(ref), losses(cut), losses(res)
        wa, wb = last(tmp / "folder"), last(tmp / "s3")
        same_w = all(torch.equal(wa[k], wb[k]) for k in wa)
        print(
            f"folder run: {len(lr)} steps; S3 run: stopped at step {cut.step}, resumed to {res.step}"
        )
        print("| step | folder loss | S3 loss |\n|---|---|---|")
        s3_all = lc + lres
        for i in sorted({0, a.steps // 2 - 1, a.steps // 2, a.steps - 1}):
            print(f"| {i + 1} | {lr[i]:.6f} | {s3_all[i]:.6f} |")
        print(f"loss curves equal to the last digit: {lr == s3_all}; final weights equal: {same_w}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
