"""``condiff data``: the bundled photographs, and ``condiff data pack`` (folders -> shards)."""

from __future__ import annotations

import argparse
import sys

PACK_HELP = """\
Pack training images into WebDataset-convention tar shards (KEY.target.png, KEY.cond.png: the
original file bytes, in the order training lists them) plus shards.json (a wids shard index:
counts, sizes, channel modes, a SHA-256 per shard, the bad files left out) and members.npz (each
image's shard, offset, size and dimensions). Every image is decoded once here, in parallel, so training from the shards opens
nothing at start-up. Train with data.kind=shards data.shards=OUT (or an s3://, gs:// or https://
URL where OUT was copied)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "data",
        help="write the bundled photographs to a folder; `data pack`: folders -> shards",
        description="condiff data --output DIR writes the bundled photographs; "
        "condiff data pack SOURCE --output DIR packs a folder into shards.",
    )
    s.add_argument("--output", help="where to write the bundled photographs")
    s.add_argument("--color", choices=["gray", "rgb"], default="gray")
    s.set_defaults(fn=run)
    verbs = s.add_subparsers(dest="verb", metavar="pack")
    p = verbs.add_parser("pack", help="pack a folder into shards", description=PACK_HELP)
    p.add_argument(
        "source", help="a folder of clean images, or (--paired) a folder with cond/ and target/"
    )
    p.add_argument("--output", required=True, help="the folder for shard-*.tar and shards.json")
    p.add_argument("--paired", action="store_true", help="SOURCE holds cond/ and target/")
    p.add_argument("--manifest", default=None, help="a CSV of cond,target paths (paired)")
    p.add_argument("--cond-dir", default="cond")
    p.add_argument("--target-dir", default="target")
    p.add_argument(
        "--color",
        choices=["gray", "rgb"],
        default=None,
        help="clean images: check them as this (training's data.color converts them anyway)",
    )
    p.add_argument("--shard-mb", type=float, default=256.0, help="about this many MB a shard")
    p.add_argument(
        "--workers", type=int, default=None, help="processes decoding (default: cores - 1)"
    )
    p.add_argument(
        "--strict", action="store_true", help="fail on a bad file instead of leaving it out"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(fn=run_pack)


def run(a: argparse.Namespace) -> int:
    if not a.output:
        raise ValueError("condiff data: give --output DIR (the bundled photographs) or `pack`")
    from condiff.data import export_bundled

    paths = export_bundled(a.output, a.color)
    print(f"wrote {len(paths)} photographs to {a.output}")
    return 0


def run_pack(a: argparse.Namespace) -> int:
    import csv
    import time
    from pathlib import Path

    from condiff.data.io import ImageError, bad_files_error
    from condiff.data.shards import PackItem, pack, pack_items

    if a.manifest:
        items = []
        mpath = Path(a.manifest)
        with mpath.open(newline="") as f:
            for row in csv.reader(f):
                if row and row[0].strip().lower() != "cond" and len(row) >= 2:
                    c, t = (Path(x.strip()) for x in row[:2])
                    c, t = (p if p.is_absolute() else mpath.parent / p for p in (c, t))
                    items.append(PackItem(t.stem, t, c))
    else:
        items = pack_items(a.source, a.paired, a.cond_dir, a.target_dir)
    if not items:
        raise ImageError(f"no images found in {a.source}")
    bar = None
    if not a.no_progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), desc="check", unit="img")

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    t0 = time.perf_counter()
    index = pack(
        items, a.output, color=a.color, shard_mb=a.shard_mb, workers=a.workers,
        progress=progress, source=str(a.manifest or a.source), strict=a.strict,
    )  # fmt: skip
    if bar is not None:
        bar.close()
    bad = [(Path(b["name"]), b["why"]) for b in index["bad"]]
    mb = index["bytes"] / 2**20
    print(
        f"packed {index['count']:,} {'pairs' if index['paired'] else 'images'} into "
        f"{len(index['shardlist'])} shard(s), {mb:,.1f} MB, in {time.perf_counter() - t0:.1f} s; "
        f"index {Path(a.output) / 'shards.json'}"
    )
    if bad:
        print(str(bad_files_error(bad, "files left out (listed in shards.json)")), file=sys.stderr)
    return 0
