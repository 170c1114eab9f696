"""Progress and cancellation between network calls (torch and numpy engines alike).

A sampling run makes ``calls`` network calls, each over ``tiles`` tiles of the image. A callback
given to :meth:`condiff.infer.Pipeline.__call__` sees a :class:`Progress` before each call and
after each chunk of tiles; raising :class:`Cancelled` from it stops the run there, so abandoned
work (a client gone, a server draining) costs at most one chunk of tiles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class Cancelled(Exception):
    """The run was cancelled by its progress callback (between network calls or tile chunks)."""


@dataclass
class Progress:
    """Network call ``call`` of ``calls``; ``tile`` of ``tiles`` tiles done within it."""

    call: int = 0
    calls: int = 0
    tile: int = 0
    tiles: int = 1

    def __str__(self) -> str:
        tiles = f", tile {self.tile}/{self.tiles}" if self.tiles > 1 else ""
        return f"step {self.call}/{self.calls}{tiles}"


Callback = Callable[[Progress], None]


class Counted:
    """A (tiled) network that reports each call, and each chunk of tiles, to ``callback``."""

    def __init__(self, net: Any, calls: int, callback: Callback) -> None:
        self.net, self.callback = net, callback
        self.progress = Progress(calls=calls)
        if hasattr(net, "on_chunk"):
            net.on_chunk = self._chunk

    def _chunk(self, done: int, total: int) -> None:
        self.progress.tile, self.progress.tiles = done, total
        self.callback(self.progress)

    def __call__(self, x: Any, t: Any) -> Any:
        self.progress.call += 1
        self.progress.tile = 0
        self.callback(self.progress)
        return self.net(x, t)
