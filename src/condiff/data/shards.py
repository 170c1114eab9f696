"""Shards: image pairs packed into WebDataset-convention tar files, read back by index.

``condiff data pack`` writes ``shard-000000.tar, ...`` whose members are ``KEY.target.EXT`` (and
``KEY.cond.EXT`` for paired data), the original file bytes, in the source's sorted order, plus
``shards.json``: a `wids` shard index (``shardlist`` of ``url`` + ``nsamples``: other tools read
the shards as they are) with the counts, sizes and channel modes, the SHA-256 of each shard and
the bad files that were left out, and ``members.npz``: each sample's name, shard, dimensions and
the byte offset and size of each of its images, as arrays. Every image is
decoded once while packing, so training need not check them again.

Reading is random access by sample index, so the training order stays a pure function of
``(seed, step)`` (exact resume on any number of ranks, the same order as the folder it came
from). Shards live on a local path or any fsspec URL (``s3://``, ``gs://``, ``https://``). A
dataset that fits ``cache_mb`` is fetched shard by shard into a local cache on first use; a larger
one is read member by member with ranged reads (one request per image, nothing kept).
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condiff.data.io import ImageError, read_image
from condiff.data.items import Item, Member
from condiff.files import atomic_write_text, sha256

INDEX = "shards.json"
MEMBERS = "members.npz"  # per sample: name, shard, height, width, offsets, sizes, extensions
FORMAT = "condiff-shards-v1"
EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# --- packing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackItem:
    name: str
    target: Path
    cond: Path | None


def _check(item: PackItem, color: str | None) -> dict[str, Any]:
    """Decode every image of a pair once; its channels and size, or why it is bad."""
    out: dict[str, Any] = {"name": item.name}
    try:
        t, depth = read_image(item.target, color)
        out.update(h=t.shape[0], w=t.shape[1], tc=t.shape[2], depth=depth)
        if item.cond is not None:
            c, _ = read_image(item.cond, None)
            if c.shape[:2] != t.shape[:2]:
                raise ImageError(
                    f"size mismatch: target {item.target} is {t.shape[1]}x{t.shape[0]} but "
                    f"condition {item.cond} is {c.shape[1]}x{c.shape[0]}"
                )
            out["cc"] = c.shape[2]
    except ImageError as e:
        out["bad"] = str(e)
    return out


def pack(
    items: list[PackItem],
    out_dir: str | Path,
    *,
    color: str | None = None,
    shard_mb: float = 256.0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    source: str = "",
    strict: bool = False,
) -> dict[str, Any]:
    """Decode-check ``items`` in parallel, then write shards of about ``shard_mb`` MB each and
    ``shards.json`` into ``out_dir``. Bad files are left out and listed in the index (``strict``:
    refused, all named, before anything is written). Returns the index."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, (os.cpu_count() or 2) - 1)
    checked: list[dict[str, Any]] = []
    with ProcessPoolExecutor(workers) as ex:
        for i, res in enumerate(ex.map(_check, items, [color] * len(items), chunksize=16)):
            checked.append(res)
            if progress is not None:
                progress(i + 1, len(items))
    bad = [{"name": c["name"], "why": c["bad"]} for c in checked if "bad" in c]
    if bad and strict:
        from condiff.data.io import bad_files_error

        raise bad_files_error([(Path(b["name"]), b["why"]) for b in bad], "images to pack")
    good = [(it, c) for it, c in zip(items, checked, strict=True) if "bad" not in c]
    if not good:
        raise ImageError(f"no usable images to pack ({len(bad)} bad)")
    modes = {(c["tc"], c.get("cc")) for _, c in good}
    if len(modes) > 1:
        raise ImageError(
            f"mixed channel counts (target, condition): {sorted(modes, key=str)}; pack images "
            "of one kind together (or pack clean images with --color)"
        )
    writer = _ShardWriter(out, int(shard_mb * 2**20))
    for it, c in good:
        writer.add(it, c["h"], c["w"])
    writer.close()
    shards, names, members = writer.shards, writer.names, writer.members
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": out.name,
        "format": FORMAT,
        "shardlist": shards,
        "paired": good[0][0].cond is not None,
        "color": color,
        "count": len(names),
        "target_channels": good[0][1]["tc"],
        "cond_channels": good[0][1].get("cc"),
        "bit_depths": sorted({c["depth"] for _, c in good}),
        "min_size": [min(c["h"] for _, c in good), min(c["w"] for _, c in good)],
        "max_size": [max(c["h"] for _, c in good), max(c["w"] for _, c in good)],
        "bytes": sum(s["bytes"] for s in shards),
        "source": source,
        "bad": bad,
        "members": MEMBERS,
    }
    write_members(out, names, members)
    atomic_write_text(out / INDEX, json.dumps(index))
    return index


class _ShardWriter:
    """Tar shards of about ``limit`` bytes: each written to a temporary name, then renamed in
    with its size and SHA-256 recorded; each member's data offset recorded as it is added."""

    def __init__(self, out: Path, limit: int) -> None:
        self.out, self.limit = out, limit
        self.shards: list[dict[str, Any]] = []
        self.names: list[str] = []
        self.members: list[list] = []
        self.tar: tarfile.TarFile | None = None
        self.tmp: Path | None = None
        self.count = 0

    def add(self, it: PackItem, h: int, w: int) -> None:
        files = [("target", it.target)] + ([("cond", it.cond)] if it.cond is not None else [])
        size = sum(p.stat().st_size + 1024 for _, p in files)
        if self.tar is not None and self.tar.offset + size > self.limit:
            self.close()
        if self.tar is None:
            fd, name = tempfile.mkstemp(dir=self.out, prefix=".tmp-shard-", suffix=".tar")
            os.close(fd)
            self.tmp = Path(name)
            self.tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
            self.count = 0
        key = f"{len(self.names):09d}"
        row: list = [len(self.shards), h, w]
        for part, path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(f"{key}.{part}{path.suffix.lower()}")
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            self.tar.addfile(info, io.BytesIO(data))
            # the data ends where the tar now stands, padded to 512 bytes
            row += [self.tar.offset - _padded(len(data)), len(data), path.suffix.lower()]
        self.names.append(it.name)
        self.members.append(row)
        self.count += 1

    def close(self) -> None:
        if self.tar is None or self.tmp is None:
            return
        self.tar.close()
        final = self.out / f"shard-{len(self.shards):06d}.tar"
        os.chmod(self.tmp, 0o644)  # (mkstemp made it 0600)
        os.replace(self.tmp, final)
        self.shards.append({"url": final.name, "nsamples": self.count,
                            "bytes": final.stat().st_size, "sha256": sha256(final)})  # fmt: skip
        self.tar, self.tmp = None, None


def _padded(n: int) -> int:
    return (n + 511) // 512 * 512


def pack_items(root: str | Path, paired: bool, cond_dir: str, target_dir: str) -> list[PackItem]:
    """The items of a folder the way training lists them: clean images (sorted), or cond/ and
    target/ matched by name."""
    from condiff.data.io import list_images

    root = Path(root)
    if not paired:
        return [PackItem(p.stem, p, None) for p in list_images(root)]
    conds = {p.stem: p for p in list_images(root / cond_dir)}
    targets = {p.stem: p for p in list_images(root / target_dir)}
    missing = sorted(set(conds) ^ set(targets))
    if missing:
        raise ImageError(f"missing pair for: {', '.join(missing[:10])} (cond/ and target/ differ)")
    return [PackItem(n, targets[n], conds[n]) for n in sorted(targets)]


# --- reading ----------------------------------------------------------------------------------


def index_url(spec: str) -> str:
    """``data.shards``: the index itself, the folder / URL prefix that holds it, or a glob or
    brace pattern of its tars (``packed/shard-*.tar``, ``s3://b/p/shard-{000000..000099}.tar``:
    the index beside them lists which belong)."""
    if spec.endswith(".json"):
        return spec
    if any(c in spec for c in "*?[{") or spec.endswith(".tar"):
        spec = spec.rsplit("/", 1)[0] if "/" in spec else "."
    return spec.rstrip("/") + "/" + INDEX


def _fs(url: str) -> tuple[Any, str]:
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise ImageError(
            f"data.shards={url}: cannot open ({e}); remote storage needs its fsspec backend, "
            "e.g. pip install 'condiff[s3]' (s3fs) or aiohttp for https://"
        ) from None


def read_index(spec: str) -> dict[str, Any]:
    url = index_url(spec)
    fs, path = _fs(url)
    try:
        with fs.open(path, "rb") as f:
            index = json.loads(f.read())
    except FileNotFoundError:
        raise ImageError(
            f"data.shards: no {INDEX} at {url} (pack with `condiff data pack`)"
        ) from None
    except (OSError, ValueError) as e:
        raise ImageError(f"data.shards: cannot read {url} ({e})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ImageError(f"{url}: not a condiff shard index (format {FORMAT})")
    index["_base"] = url.rsplit("/", 1)[0]
    return index


class ShardStore:
    """Bytes of shard members by index, from a local path or an fsspec URL.

    A dataset of at most ``cache_mb`` is copied shard by shard into ``cache_dir`` on first use
    (each shard once, checked against its SHA-256); a larger one is read with ranged reads. Made
    once per process (loader workers open their own connections)."""

    def __init__(
        self, index: dict[str, Any], cache_dir: str | Path | None, cache_mb: float
    ) -> None:
        self.base = index["_base"]
        self.shards = index["shardlist"]
        self.whole = index["bytes"] <= cache_mb * 2**20
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._fs: Any = None
        self._paths: list[str] = []
        self._local: dict[int, Path] = {}

    def __getstate__(self) -> dict[str, Any]:  # loader workers open their own connections
        return {**self.__dict__, "_fs": None, "_paths": [], "_local": {}}

    def _url(self, shard: int) -> str:
        return f"{self.base}/{self.shards[shard]['url']}"

    def _remote(self) -> tuple[Any, list[str]]:
        """The filesystem and each shard's path in it, resolved once per process."""
        if self._fs is None:
            self._fs, _ = _fs(self.base + "/")
            self._paths = [_fs(self._url(i))[1] for i in range(len(self.shards))]
        return self._fs, self._paths

    def _is_local(self) -> bool:
        return "://" not in self.base or self.base.startswith("file://")

    def read(self, m: Member) -> bytes:
        if self._is_local():
            path = self._url(m.shard).removeprefix("file://")
        elif self.whole and self.cache_dir is not None:
            path = str(self._cached(m.shard))
        else:  # a ranged read of just this image
            fs, paths = self._remote()
            return fs.cat_file(paths[m.shard], start=m.offset, end=m.offset + m.size)
        with open(path, "rb") as f:
            f.seek(m.offset)
            return f.read(m.size)

    def _cached(self, shard: int) -> Path:
        if shard in self._local:
            return self._local[shard]
        entry = self.shards[shard]
        assert self.cache_dir is not None
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        final = self.cache_dir / f"{entry['sha256'][:16]}-{entry['url']}"
        if not (final.is_file() and final.stat().st_size == entry["bytes"]):
            fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-")
            os.close(fd)
            fs, paths = self._remote()
            fs.get_file(paths[shard], tmp)
            if sha256(Path(tmp)) != entry["sha256"]:
                os.unlink(tmp)
                raise ImageError(f"{self._url(shard)}: its SHA-256 differs from {INDEX}'s")
            os.replace(tmp, final)
        self._local[shard] = final
        return final


def write_members(out: Path, names: list[str], rows: list[list]) -> None:
    """The per-sample index as numpy arrays (a few tens of bytes a sample: a million pairs is
    tens of MB, read without building a Python object per sample)."""
    paired = len(rows[0]) > 6
    a = {
        "names": np.array([n.encode() for n in names]),
        "shard": np.array([r[0] for r in rows], np.int32),
        "hw": np.array([(r[1], r[2]) for r in rows], np.int32),
        "target": np.array([(r[3], r[4]) for r in rows], np.int64),
        "target_ext": np.array([EXTS.index(r[5]) for r in rows], np.uint8),
    }
    if paired:
        a["cond"] = np.array([(r[6], r[7]) for r in rows], np.int64)
        a["cond_ext"] = np.array([EXTS.index(r[8]) for r in rows], np.uint8)
    tmp = out / f".tmp-{MEMBERS}"
    with tmp.open("wb") as f:
        np.savez(f, **a)
    os.replace(tmp, out / MEMBERS)


class ShardItems(Sequence):
    """The samples of a shard set as :class:`condiff.data.datasets.Item`, made on demand from
    the arrays of ``members.npz``, so memory per sample stays a few tens of bytes."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.a = arrays
        self.paired = "cond" in arrays

    def __len__(self) -> int:
        return len(self.a["shard"])

    def name(self, i: int) -> str:
        return self.a["names"][i].decode()

    def __getitem__(self, i):  # type: ignore[override]
        a, s = self.a, int(self.a["shard"][i])
        h, w = (int(v) for v in a["hw"][i])
        off, size = (int(v) for v in a["target"][i])
        target = Member(s, off, size, EXTS[a["target_ext"][i]])
        cond = None
        if self.paired:
            off, size = (int(v) for v in a["cond"][i])
            cond = Member(s, off, size, EXTS[a["cond_ext"][i]])
        return Item(self.name(i), target, cond, (h, w))


def read_members(index: dict[str, Any]) -> ShardItems:
    url = f"{index['_base']}/{index['members']}"
    fs, path = _fs(url)
    try:
        with fs.open(path, "rb") as f:
            data = np.load(io.BytesIO(f.read()))
            return ShardItems({k: data[k] for k in data.files})
    except (OSError, ValueError, KeyError) as e:
        raise ImageError(f"data.shards: cannot read {url} ({e})") from None
