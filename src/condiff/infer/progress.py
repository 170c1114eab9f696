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


class Bar:
    """A progress bar over a run's network calls and, on a tiled image, their tiles (a mean on
    a 6000 x 6000 image is one call of hundreds of tiles: the bar moves per chunk of tiles).
    Used as a :data:`Callback`; ``label`` names the estimate ("mean", "sample: ddpm 50 steps")."""

    def __init__(self, label: str, calls: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=calls, desc=label, unit="call", dynamic_ncols=True)

    def __call__(self, p: Progress) -> None:
        if p.tiles > 1 and self.bar.total != p.calls * p.tiles:
            self.bar.total, self.bar.unit = p.calls * p.tiles, "tile"
        done = max(0, p.call - 1) * p.tiles + p.tile
        if done != self.bar.n:
            self.bar.n = done
            self.bar.refresh()

    def close(self) -> None:
        self.bar.n = self.bar.total
        self.bar.refresh()
        self.bar.close()


def chain(*callbacks: Callback | None) -> Callback | None:
    """One callback calling each given one in turn (None where none is given)."""
    given = [c for c in callbacks if c is not None]
    if len(given) < 2:
        return given[0] if given else None

    def both(p: Progress) -> None:
        for c in given:
            c(p)

    return both
