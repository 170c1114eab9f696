"""``condiff bench --data``: training-loader throughput (crops per second) from a folder, from
local shards, and from shards on a local S3-compatible server, side by side in one run.

The loader is the one training builds (:func:`condiff.train.setup.make_loader`): the SR recipe's
batch and crop by default, every crop degraded by the task, with each worker count asked for.
The folder is packed into shards in a temporary folder first; the S3 rows start moto in server
mode on localhost and read through s3fs (skipped, and said so, where those are not installed).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

GPU_RATE = 1420.0  # img/s of one H100 or H200 on the SR recipe (docs/NOTES.md)


def _rate(data: dict[str, Any], workers: int, batch: int, seconds: float, run: Path) -> float:
    """Crops per second of the training loader over ``seconds`` (after its first batch)."""
    from condiff.config import RunConfig
    from condiff.data.datasets import make_source, split
    from condiff.train.setup import make_loader

    cfg = RunConfig.from_dict(
        {
            "model": {"preset": "small"},
            "data": {**data, "num_workers": workers, "pin_memory": False},
            "train": {"batch_size": batch, "output_dir": str(run)},
        }
    )
    source = make_source(cfg.data, bundled_dest=run / "data")
    train_idx, _ = split(source, cfg.data.val_count)
    loader = make_loader(cfg, source, train_idx, start_step=0, micro=batch, rank=0, world=1,
                         cuda=False)  # fmt: skip
    it = iter(loader)
    next(it)  # workers started, caches warm
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += batch
    rate = n / (time.perf_counter() - t0)
    del it, loader
    return rate


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_s3(folder: Path):
    """Moto's S3 server on localhost with ``folder`` uploaded; yields its URL (None if moto or
    s3fs is missing)."""
    try:
        import fsspec.config
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        yield None
        return
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    port = _port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "FSSPEC_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"}  # fmt: skip
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fsspec.config.set_conf_env(fsspec.config.conf)
    try:
        fs = s3fs.S3FileSystem(endpoint_url=env["FSSPEC_S3_ENDPOINT_URL"])
        fs.mkdir("bench")
        fs.put(str(folder), "bench/shards", recursive=True)
        yield "s3://bench/shards"
    finally:
        server.stop()
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        fsspec.config.conf.pop("s3", None)


def run_data_bench(
    root: str,
    *,
    workers: list[int],
    batch: int = 256,
    crop: int = 64,
    color: str = "rgb",
    seconds: float = 10.0,
    s3: bool = True,
    cache_mb: float | None = None,
) -> list[dict[str, Any]]:
    """Print and return the table: source, workers, crops/s, and crops/s per worker."""
    from condiff.data.shards import pack, pack_items

    tmp = Path(tempfile.mkdtemp(prefix="condiff-bench-data-"))
    task = {"name": "super_resolution", "factor": 4}
    base = {"kind": "task", "root": root, "color": color, "crop_size": crop, "task": task,
            "flip": True, "rotate": True}  # fmt: skip
    if cache_mb is not None:  # 0: every crop decodes its image (the storage is what is timed)
        base["cache_mb"] = cache_mb
    rows: list[dict[str, Any]] = []
    try:
        t0 = time.perf_counter()
        index = pack(pack_items(root, False, "cond", "target"), tmp / "shards", color=color)
        pack_s = time.perf_counter() - t0
        print(f"packed {index['count']} images of {root} in {pack_s:.1f} s "
              f"({index['bytes'] / 2**20:.1f} MB, {len(index['shardlist'])} shard(s))")  # fmt: skip
        sources = [("folder", base), ("local shards", {**base, "kind": "shards",
                                                      "shards": str(tmp / "shards")})]  # fmt: skip
        with local_s3(tmp / "shards") if s3 else _none() as url:
            if url is None and s3:
                print("S3 rows skipped: moto[server] and s3fs are not installed")
            if url is not None:
                sources.append(("S3 (moto, localhost), shards cached", {**base, "kind": "shards",
                                "shards": url}))  # fmt: skip
                sources.append(("S3 (moto, localhost), ranged reads", {**base, "kind": "shards",
                                "shards": url, "shard_cache_mb": 0}))  # fmt: skip
            for name, data in sources:
                for w in workers:
                    run = tmp / f"run-{len(rows)}"
                    r = _rate(data, w, batch, seconds, run)
                    rows.append({"source": name, "workers": w, "crops_per_s": r,
                                 "per_worker": r / max(w, 1)})  # fmt: skip
                    print(f"  {name:38s} workers {w:3d}: {r:9.1f} crops/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    cores = os.cpu_count() or 1
    cache = "default" if cache_mb is None else f"{cache_mb:g} MB"
    print(f"\nLoader throughput, batch {batch} of {crop} px {color} crops, 4x SR degradation, "
          f"{seconds:.0f} s per row, decoded-image cache {cache} per process, {cores} cores here")  # fmt: skip
    print("| source | workers | crops/s | per worker | workers to feed one GPU (1,420 img/s) |")
    print("|---|---|---|---|---|")
    for r in rows:
        need = GPU_RATE / r["per_worker"] if r["per_worker"] > 0 else float("inf")
        print(f"| {r['source']} | {r['workers']} | {r['crops_per_s']:,.0f} | "
              f"{r['per_worker']:,.0f} | {need:.1f} |")  # fmt: skip
    return rows


@contextmanager
def _none():
    yield None
