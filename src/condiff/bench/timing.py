"""What every benchmark shares: a median timer (CUDA events on a GPU) and a table writer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


def timer(device: torch.device, fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` over ``repeats`` timed runs after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_device(device: str) -> torch.device:
    """``auto`` -> CUDA where there is one, else the CPU; other names as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Col:
    """One column: header, width, and how a cell is written (``fmt`` for numbers)."""

    name: str
    width: int
    fmt: str = ".1f"
    left: bool = False  # left-aligned text (names)


def cell(value: object, col: Col) -> str:
    if value is None or (isinstance(value, float) and value != value):
        text = "-"
    elif isinstance(value, float):
        text = "inf" if value == float("inf") else format(value, col.fmt)
    else:
        text = str(value)
    return text.ljust(col.width) if col.left else text.rjust(col.width)


def table(cols: Sequence[Col], rows: Sequence[Sequence[object]], rule: bool = True) -> str:
    """A fixed-width table: header, a rule, one line per row."""
    head = "".join(c.name.ljust(c.width) if c.left else c.name.rjust(c.width) for c in cols)
    lines = [head, "-" * len(head)] if rule else [head]
    lines += ["".join(cell(v, c) for v, c in zip(r, cols, strict=True)) for r in rows]
    return "\n".join(lines)


def ratio(value: float | None, base: float | None, inverse: bool = False) -> float | None:
    """``value / base`` (a speed-up for rates), or ``base / value`` for times; None if unknown."""
    if value is None or base is None or value == 0:
        return None
    return base / value if inverse else value / base
