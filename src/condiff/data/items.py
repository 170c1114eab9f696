"""What a training source lists: an item (a file pair, or images inside a shard)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Member:
    """One image inside a shard: where its bytes are."""

    shard: int
    offset: int
    size: int
    ext: str  # ".png", ".jpg", ...

    def label(self, key: int) -> str:
        return f"shard-{self.shard:06d}.tar key {key:09d}"


@dataclass(frozen=True)
class Item:
    name: str
    target: Path | Member  # a file, or an image inside a shard
    cond: Path | Member | None  # None: the condition is made by the task
    size: tuple[int, int] | None = None  # (height, width) where known without opening the file
