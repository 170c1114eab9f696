"""Loader memory and start-up time against dataset size (issue 31), on synthetic pairs.

For each size N: N small paired images (random 32x32 gray PNGs, made in memory) are written
straight into shards in `condiff data pack`'s format (the same index, no per-file step), then the
training loader reads a fixed number of batches; the table gives the index size, the time to
open the source, the peak RSS of the process, and the crops/s. With --folder N, N files are also
written as a folder and the start-up check timed with data.check all / sample / none.

    python scripts/data_scale.py --sizes 10000 100000 1000000 [--folder 100000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def png(rng: np.random.Generator, side: int = 32) -> bytes:
    b = io.BytesIO()
    Image.fromarray((rng.random((side, side)) * 255).astype(np.uint8)).save(b, format="PNG")
    return b.getvalue()


def synthetic_shards(out: Path, n: int, per_shard: int = 50_000) -> None:
    """N pairs in condiff's shard format (a few distinct images reused: the index and the
    reading are what scale, not the pixels)."""
    from condiff.data.shards import FORMAT, INDEX, MEMBERS, _padded, write_members
    from condiff.files import sha256

    rng = np.random.default_rng(0)
    pool = [png(rng) for _ in range(64)]
    out.mkdir(parents=True, exist_ok=True)
    shards, names, members = [], [], []
    for s0 in range(0, n, per_shard):
        path = out / f"shard-{len(shards):06d}.tar"
        with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(s0, min(n, s0 + per_shard)):
                row: list = [len(shards), 32, 32]
                for part, data in (("target", pool[i % 64]), ("cond", pool[(i * 7) % 64])):
                    info = tarfile.TarInfo(f"{i:09d}.{part}.png")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                    row += [tar.offset - _padded(len(data)), len(data), ".png"]
                names.append(f"img{i:09d}")
                members.append(row)
        shards.append({"url": path.name, "nsamples": min(n, s0 + per_shard) - s0,
                       "bytes": path.stat().st_size, "sha256": sha256(path)})  # fmt: skip
    index = {"__kind__": "wids-shard-index-v1", "wids_version": 1, "format": FORMAT,
             "shardlist": shards, "paired": True, "color": None, "count": n,
             "target_channels": 1, "cond_channels": 1, "bit_depths": [8],
             "min_size": [32, 32], "max_size": [32, 32], "bytes": sum(s["bytes"] for s in shards),
             "source": "synthetic", "bad": [], "members": MEMBERS}  # fmt: skip
    write_members(out, names, members)
    (out / INDEX).write_text(json.dumps(index))


CHILD = """
import json, resource, sys, time
from pathlib import Path
from condiff.config import RunConfig
from condiff.data.datasets import make_source, split
from condiff.train.setup import make_loader
spec, batches, check = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = ({"kind": "shards", "shards": spec} if check == "shards" else
        {"kind": "paired", "root": spec, "check": check})
cfg = RunConfig.from_dict({"model": {"preset": "tiny", "in_img_channels": 2,
    "out_img_channels": 1}, "data": {**data, "crop_size": 32, "val_count": 2,
    "num_workers": 0}, "train": {"batch_size": 64}})
t0 = time.perf_counter()
source = make_source(cfg.data)
train, _ = split(source, 2)
opened = time.perf_counter() - t0
loader = make_loader(cfg, source, train, start_step=0, micro=64, rank=0, world=1, cuda=False)
it = iter(loader); next(it)
t1 = time.perf_counter()
for _ in range(batches):
    next(it)
rate = batches * 64 / (time.perf_counter() - t1)
import os
now = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
print(json.dumps({"open_s": opened, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "now_mb": now, "crops_s": rate}))
"""


def measure(spec: str, batches: int, check: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, spec, str(batches), check],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--batches", type=int, default=200)
    ap.add_argument("--folder", type=int, default=0, help="also time a folder of this many pairs")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="condiff-scale-"))
    try:
        print(f"| pairs | index MB | open s | peak RSS MB | RSS after MB | crops/s | "
              f"({a.batches} batches of 64) |")  # fmt: skip
        print("|---|---|---|---|---|---|---|")
        for n in a.sizes:
            d = tmp / f"s{n}"
            synthetic_shards(d, n)
            r = measure(str(d), a.batches, "shards")
            mb = sum((d / f).stat().st_size for f in ("shards.json", "members.npz")) / 2**20
            print(f"| {n:,} | {mb:.1f} | {r['open_s']:.2f} | {r['rss_mb']:.0f} | "
                  f"{r['now_mb']:.0f} | {r['crops_s']:,.0f} | shards |", flush=True)  # fmt: skip
            shutil.rmtree(d)
        if a.folder:
            root = tmp / "folder"
            rng = np.random.default_rng(1)
            pool = [png(rng) for _ in range(64)]
            for sub in ("cond", "target"):
                (root / sub).mkdir(parents=True)
            t0 = time.perf_counter()
            for i in range(a.folder):
                (root / "cond" / f"{i:07d}.png").write_bytes(pool[(i * 7) % 64])
                (root / "target" / f"{i:07d}.png").write_bytes(pool[i % 64])
            print(f"\nwrote {a.folder:,} pairs as files in {time.perf_counter() - t0:.0f} s")
            os.sync()
            print(
                "| folder pairs | data.check | start-up s | peak RSS MB | crops/s |\n|---|---|---|---|---|"
            )
            for check in ("all", "sample", "none"):
                r = measure(str(root), a.batches, check)
                print(f"| {a.folder:,} | {check} | {r['open_s']:.1f} | {r['rss_mb']:.0f} | "
                      f"{r['crops_s']:,.0f} |", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
