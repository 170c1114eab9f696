"""Paired folders and clean-images-plus-task sources, training crops, deterministic splits."""

from __future__ import annotations

import collections
import csv
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from condiff.config import DataConfig, ModelConfig
from condiff.data.bundled import export_bundled
from condiff.data.io import (
    ImageError,
    list_images,
    probe_image,
    probe_images,
    read_image,
    refuse_bad,
    to_model,
)
from condiff.data.items import Item, Member
from condiff.data.shards import ShardItems, ShardStore, read_index, read_members
from condiff.data.tasks import Task, make_task


class ImageSource:
    """A list of items that load as full-size ``(cond, target)`` tensors in [-1, 1].

    Decoded images are kept in a per-process LRU cache of at most ``cache_mb`` (each loader
    worker has its own), so memory stays bounded whatever the dataset's size. Items inside
    shards are read through ``store`` (:class:`condiff.data.shards.ShardStore`)."""

    def __init__(
        self,
        items: list[Item] | ShardItems,
        target_channels: int,
        cond_channels: int,
        task: Task | None,
        color: str | None,
        *,
        store: ShardStore | None = None,
        cache_mb: float = 1024.0,
    ) -> None:
        self.items = items
        self.target_channels = target_channels
        self.cond_channels = cond_channels
        self.task = task
        self.color = color
        self.store = store
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: collections.OrderedDict[int, tuple[Tensor | None, Tensor]] = (
            collections.OrderedDict()
        )
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def name(self, i: int) -> str:
        """Item ``i``'s name (the validation split hashes it) without building the item."""
        items = self.items
        return items.name(i) if isinstance(items, ShardItems) else items[i].name

    def where(self, i: int) -> str:
        """The item's file, or its shard and key: what a log line names."""
        t = self.items[i].target
        return t.label(i) if isinstance(t, Member) else str(t)

    def _read(self, src: Path | Member, color: str | None) -> Tensor:
        if isinstance(src, Member):
            assert self.store is not None
            try:
                data = self.store.read(src)
            except OSError as e:
                raise ImageError(f"{src.label(0)}: cannot read ({e})") from None
            return to_model(read_image(data, color)[0])
        return to_model(read_image(src, color)[0])

    def load_raw(self, i: int) -> tuple[Tensor | None, Tensor]:
        """(cond or None, target) as decoded, from the bounded cache where it is there."""
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        it = self.items[i]
        target = self._read(it.target, self.color)
        cond = self._read(it.cond, None) if it.cond is not None else None
        pair = (cond, target)
        size = target.nbytes + (cond.nbytes if cond is not None else 0)
        if size <= self.cache_bytes:
            self._cache[i] = pair
            self._cached_bytes += size
            while self._cached_bytes > self.cache_bytes:
                _, (c, t) = self._cache.popitem(last=False)
                self._cached_bytes -= t.nbytes + (c.nbytes if c is not None else 0)
        return pair

    def degrade(self, target: Tensor, rng: np.random.Generator) -> Tensor:
        assert self.task is not None
        return self.task.degrade(target, rng)


CHECK_SAMPLE = 1000  # data.check: sample: how many files the start-up check opens


def checked(items: list, how: str) -> list:
    """The items the start-up check opens: all, a fixed sample of 1,000 (spread by a seeded
    permutation, so the same every run), or only the first (its channels are needed)."""
    if how == "all" or len(items) <= 1:
        return items
    if how == "none":
        return items[:1]
    order = np.random.default_rng(0).permutation(len(items))[:CHECK_SAMPLE]
    return [items[i] for i in sorted(order)]


def paired_source(cfg: DataConfig) -> ImageSource:
    """cond/ and target/ with matching names (or a CSV manifest), checked before any training."""
    root = Path(cfg.root)
    items: list[Item] = []
    if cfg.manifest:
        mpath = Path(cfg.manifest)
        if not mpath.is_file():
            raise ImageError(f"data.manifest: file not found: {mpath}")
        with mpath.open(newline="") as f:
            for row_no, row in enumerate(csv.reader(f), 1):
                if not row or row[0].strip().lower() == "cond":
                    continue
                if len(row) < 2:
                    raise ImageError(f"{mpath}:{row_no}: expected 'cond,target', got {row}")
                c, t = (Path(x.strip()) for x in row[:2])
                c, t = (p if p.is_absolute() else mpath.parent / p for p in (c, t))
                for p in (c, t):
                    if not p.is_file():
                        raise ImageError(f"{mpath}:{row_no}: missing file {p}")
                items.append(Item(t.stem, t, c))
    else:
        cdir, tdir = root / cfg.cond_dir, root / cfg.target_dir
        conds = {p.stem: p for p in list_images(cdir)}
        targets = {p.stem: p for p in list_images(tdir)}
        missing_c = sorted(set(targets) - set(conds))
        missing_t = sorted(set(conds) - set(targets))
        if missing_c or missing_t:
            parts = []
            if missing_c:
                parts.append(
                    f"no condition in {cdir} for target(s): "
                    + ", ".join(str(targets[n].name) for n in missing_c[:10])
                )
            if missing_t:
                parts.append(
                    f"no target in {tdir} for condition(s): "
                    + ", ".join(str(conds[n].name) for n in missing_t[:10])
                )
            raise ImageError("missing pair: " + "; ".join(parts))
        items = [Item(n, targets[n], conds[n]) for n in sorted(targets)]
    if not items:
        raise ImageError(f"no image pairs found under {root}")
    tc = cc = None
    bad: list[tuple[Path, str]] = []
    for it in checked(items, cfg.check):
        try:
            ti, ci = probe_image(it.target), probe_image(it.cond)  # type: ignore[arg-type]
        except ImageError as e:
            bad.append((it.target, str(e)))
            continue
        if (ti.height, ti.width) != (ci.height, ci.width):
            bad.append((it.target, (
                f"size mismatch: target {it.target} is {ti.width}x{ti.height} but condition "
                f"{it.cond} is {ci.width}x{ci.height} (pairs must have the same size)"
            )))  # fmt: skip
        elif tc is None:
            tc, cc = ti.channels, ci.channels
        elif (ti.channels, ci.channels) != (tc, cc):
            bad.append((it.target, (
                f"channel mismatch: {it.target} / {it.cond} have {ti.channels}/{ci.channels} "
                f"channels, earlier pairs {tc}/{cc}"
            )))  # fmt: skip
    refuse_bad(bad, f"pairs under {root}")
    return ImageSource(items, int(tc), int(cc), None, None, cache_mb=cfg.cache_mb)  # type: ignore[arg-type]


def task_source(
    cfg: DataConfig,
    bundled_dest: Path | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> ImageSource:
    """Clean images (a folder, or the bundled photographs) + a degradation task. Unreadable
    files are an error naming them, or, given ``skipped``, listed there and left out."""
    if cfg.root == "bundled":
        dest = bundled_dest or Path("runs") / "bundled-photos"
        paths = export_bundled(dest / cfg.color, cfg.color)
    else:
        paths = list_images(cfg.root)
    bad: list[tuple[Path, str]] = [] if skipped is None else skipped
    sampled = skipped is None and cfg.root != "bundled" and cfg.check != "all"
    infos = probe_images(checked(paths, cfg.check) if sampled else paths, bad)  # each by name
    if skipped is None:
        if cfg.root != "bundled":
            bad += _small(infos, cfg.crop_size)
        refuse_bad(
            bad, f"training images in {cfg.root}" + (" (a sample checked)" if sampled else "")
        )
    if not sampled:
        paths = [i.path for i in infos]
    if cfg.root == "bundled":
        # The bundled set has a few small images (microaneurysms is 102x102): leave out those
        # smaller than the crop rather than fail; user folders still get the error by name.
        paths = [i.path for i in infos if min(i.height, i.width) >= cfg.crop_size]
    if not paths:
        raise ImageError(f"no images found in {cfg.root}")
    items = [Item(p.stem, p, None) for p in paths]
    return ImageSource(items, *_task_kind(cfg), cache_mb=cfg.cache_mb)


def _task_kind(cfg: DataConfig) -> tuple[int, int, Task, str]:
    """(target channels, condition channels, task, color) of clean images + ``data.task``."""
    task = make_task(cfg.task)
    tc = task.target_channels(1 if cfg.color == "gray" else 3)
    return tc, task.cond_channels(tc), task, "rgb" if tc == 3 else "gray"


def _hw(info) -> tuple[int, int]:
    return info.height, info.width


def _small(infos: list, crop: int) -> list[tuple[Path, str]]:
    return [
        (i.path, f"{i.path}: image is {i.width}x{i.height}, smaller than data.crop_size={crop}")
        for i in infos
        if min(i.height, i.width) < crop
    ]


def shard_source(cfg: DataConfig, cache_dir: Path | None = None) -> ImageSource:
    """``condiff data pack``'s shards (checked when packed: nothing is opened here but the
    index). Clean-image shards get ``data.task``; paired shards carry their conditions."""
    index = read_index(str(cfg.shards))
    items = read_members(index)
    hw = items.a["hw"]
    small = [
        (Path(items.name(i)), f"{items.name(i)} (shard key {i:09d}): image is "
         f"{hw[i][1]}x{hw[i][0]}, smaller than data.crop_size={cfg.crop_size}")
        for i in np.nonzero(hw.min(axis=1) < cfg.crop_size)[0][:100]
    ]  # fmt: skip
    refuse_bad(small, f"images in {cfg.shards}")
    store = ShardStore(index, cfg.shard_cache or cache_dir, cfg.shard_cache_mb)
    if index["paired"]:
        tc, cc = int(index["target_channels"]), int(index["cond_channels"])
        return ImageSource(items, tc, cc, None, None, store=store, cache_mb=cfg.cache_mb)
    return ImageSource(items, *_task_kind(cfg), store=store, cache_mb=cfg.cache_mb)


def make_source(cfg: DataConfig, bundled_dest: Path | None = None) -> ImageSource:
    """The training images a config names: a paired folder, clean images + a task, or shards
    (``bundled_dest``'s parent, the run folder, holds a remote shard cache)."""
    if cfg.kind == "shards":
        cache = bundled_dest.parent / "shard-cache" if bundled_dest is not None else None
        return shard_source(cfg, cache)
    return paired_source(cfg) if cfg.kind == "paired" else task_source(cfg, bundled_dest)


def check_channels(model: ModelConfig, source: ImageSource, residual: bool = False) -> None:
    """The model's channel counts must be the data's; say how to fix it if not."""
    if residual and source.cond_channels < source.target_channels:
        raise ValueError(
            f"diffusion.residual needs a condition with at least the target's "
            f"{source.target_channels} channels; this data's has {source.cond_channels}"
        )
    want_in = source.target_channels + source.cond_channels
    if model.in_img_channels != want_in or model.out_img_channels != source.target_channels:
        raise ValueError(
            f"channel mismatch: the data has {source.target_channels}-channel targets and "
            f"{source.cond_channels}-channel conditions, so the model needs in_img_channels={want_in} "
            f"and out_img_channels={source.target_channels}, but it has {model.in_img_channels} and "
            f"{model.out_img_channels}; set model.in_img_channels={want_in} "
            f"model.out_img_channels={source.target_channels}"
        )


def split(source: ImageSource, val_count: int) -> tuple[list[int], list[int]]:
    """Deterministic train/val split: the ``val_count`` names with the smallest SHA-1 go to val."""
    if val_count >= len(source):
        raise ValueError(
            f"data.val_count={val_count} leaves no training images (only {len(source)} found)"
        )

    # the val_count names with the smallest SHA-1, found through an array of each digest's first
    # 8 bytes (8 bytes a sample, not a string each: a million names take 8 MB); the full digest
    # orders the candidates, so the split is the one sorting every hex digest gave
    def digest(i: int) -> bytes:
        return hashlib.sha1(source.name(i).encode()).digest()

    head = np.fromiter((int.from_bytes(digest(i)[:8]) for i in range(len(source))), np.uint64)
    order: list[int] = []
    if val_count:
        cut = np.partition(head, val_count - 1)[val_count - 1]
        order = sorted((int(i) for i in np.nonzero(head <= cut)[0]), key=digest)
    val = sorted(order[:val_count])
    held = set(val)
    return [i for i in range(len(source)) if i not in held], val


def _crop(
    cond: Tensor | None, target: Tensor, size: int, y: int, x: int
) -> tuple[Tensor | None, Tensor]:
    t = target[:, y : y + size, x : x + size]
    c = cond[:, y : y + size, x : x + size] if cond is not None else None
    return c, t


class TrainCrops(Dataset):
    """Item ``g`` is global sample number ``g``: image, crop, flips and degradation are all a pure
    function of ``(seed, g)``, so a resumed run (on any number of processes) sees the same data."""

    def __init__(
        self,
        source: ImageSource,
        indices: list[int],
        crop_size: int,
        *,
        flip: bool = True,
        rotate: bool = False,
        seed: int = 0,
        check: str = "all",
    ) -> None:
        self.source, self.crop, self.seed = source, crop_size, seed
        # an array, not a list of Python ints: loader workers share its pages (a list's
        # refcounts would copy it into each worker: 36 MB per worker for a million samples)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.flip, self.rotate = flip, rotate
        mult = source.task.size_multiple() if source.task else 1
        if crop_size % mult:
            raise ValueError(
                f"data.crop_size={crop_size} must be divisible by the task factor {mult}"
            )
        self.skipped = 0  # bad samples skipped in this process (a loader worker counts its own)
        self._perm_epoch, self._perm = -1, np.zeros(0, np.int64)
        if check == "none":
            return
        small = []
        for i in checked(indices, check):
            it = source.items[i]
            h, w = it.size if it.size is not None else _hw(probe_image(it.target))  # type: ignore[arg-type]
            if h < crop_size or w < crop_size:
                small.append((Path(str(it.target)), (
                    f"{source.where(i)}: image is {w}x{h}, smaller than "
                    f"data.crop_size={crop_size}"
                )))  # fmt: skip
        refuse_bad(small, "training images")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, g: int) -> tuple[Tensor, Tensor]:
        n = len(self.indices)
        epoch, pos = divmod(int(g), n)
        if self._perm_epoch != epoch:  # one permutation per epoch (O(n): not per sample)
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm_epoch = epoch
        perm = self._perm
        rng = np.random.default_rng([self.seed, 1 << 20, int(g)])
        # a sample that cannot be read (a damaged shard, a file gone bad) is skipped for the next
        # one in the permutation: still a pure function of (seed, g) for the same data
        for k in range(min(n, 64)):
            i = int(self.indices[int(perm[(pos + k) % n])])
            try:
                cond, target = self.source.load_raw(i)
                _, h, w = target.shape
                if h < self.crop or w < self.crop:
                    raise ImageError(f"image is {w}x{h}, smaller than data.crop_size={self.crop}")
                break
            except ImageError as e:
                self.skipped += 1
                why = str(e).replace(str(self.source.where(i)) + ": ", "")
                print(f"skipped a bad sample: {self.source.where(i)} ({why}); "
                      f"{self.skipped} skipped in this process", file=sys.stderr, flush=True)  # fmt: skip
        else:
            raise ImageError(f"{min(n, 64)} samples in a row could not be read; stopping")
        y, x = int(rng.integers(0, h - self.crop + 1)), int(rng.integers(0, w - self.crop + 1))
        cond, target = _crop(cond, target, self.crop, y, x)
        if self.flip:
            dims = [d for d, on in ((2, rng.random() < 0.5), (1, rng.random() < 0.5)) if on]
            if dims:
                target = target.flip(dims)
                cond = cond.flip(dims) if cond is not None else None
        if self.rotate and (k := int(rng.integers(0, 4))):  # square crops: shape unchanged
            target = target.rot90(k, (1, 2))
            cond = cond.rot90(k, (1, 2)) if cond is not None else None
        if cond is None:
            cond = self.source.degrade(target, rng)
        return cond.contiguous(), target.contiguous()


class ValCrops(Dataset):
    """Center crops of the held-out images (degradations seeded by index)."""

    def __init__(self, source: ImageSource, indices: list[int], crop_size: int) -> None:
        self.source, self.indices, self.crop = source, indices, crop_size

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        cond, target = self.source.load_raw(self.indices[k])
        _, h, w = target.shape
        s = min(self.crop, h, w)
        cond, target = _crop(cond, target, s, (h - s) // 2, (w - s) // 2)
        if cond is None:
            cond = self.source.degrade(target, np.random.default_rng([7, k]))
        return cond.contiguous(), target.contiguous()


class GlobalSampleSampler(Sampler[int]):
    """Yields this process's share of global sample numbers, from ``start`` on, forever.

    Global micro-batch ``k`` is samples ``[k*G, (k+1)*G)`` with ``G = world * micro_batch``; rank
    ``r`` takes ``[k*G + r*micro_batch, ... + micro_batch)``.
    """

    def __init__(self, start: int, micro_batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.b, self.rank, self.world = start, micro_batch, rank, world

    def __iter__(self) -> Iterator[int]:
        g = self.start
        while True:
            base = g + self.rank * self.b
            yield from range(base, base + self.b)
            g += self.world * self.b

    def __len__(self) -> int:  # pragma: no cover - infinite
        return 2**62


def full_images(
    source: ImageSource,
    indices: list[int],
    multiple: int,
    max_side: int | None = None,
    skipped: list[tuple[Path, str]] | None = None,
) -> list[tuple[str, Tensor, Tensor]]:
    """Whole held-out images (center-cropped to ``max_side`` if given, and to a multiple of
    ``multiple``), with their conditions. A file whose pixels cannot be read raises, or, given
    ``skipped``, is listed there and left out."""
    out = []
    for k, i in enumerate(indices):
        try:
            cond, target = source.load_raw(i)
        except ImageError as e:
            if skipped is None:
                raise
            skipped.append((source.items[i].target, str(e)))
            continue
        _, h, w = target.shape
        h2, w2 = min(h, max_side or h), min(w, max_side or w)
        h2, w2 = h2 - h2 % multiple, w2 - w2 % multiple
        y, x = (h - h2) // 2, (w - w2) // 2
        target = target[:, y : y + h2, x : x + w2]
        if cond is None:
            cond = source.degrade(target, np.random.default_rng([7, k]))
        else:
            cond = cond[:, y : y + h2, x : x + w2]
        out.append((source.items[i].name, cond.contiguous(), target.contiguous()))
    return out


def collate(batch: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    conds, targets = zip(*batch, strict=True)
    return torch.stack(conds), torch.stack(targets)
