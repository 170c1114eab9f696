"""The speed table's rows (``condiff bench``): one per way of running a preset."""

from __future__ import annotations

from dataclasses import dataclass

from condiff.bench.timing import Col, ratio, table


@dataclass
class BenchRow:
    preset: str
    variant: str
    train_img_s: float | None = None
    train_batch: int | None = None
    peak_mem_gib: float | None = None
    fwd_ms_b1: float | None = None
    fwd_graph_ms_b1: float | None = None  # one forward replayed from a CUDA graph
    dpmpp20_ms_b1: float | None = None
    ddim50_ms_b1: float | None = None
    sample_img_s: float | None = None
    sample_batch: int | None = None
    profile: dict[str, float] | None = None  # training-step CUDA time by kernel family, ms
    note: str = ""


COLS = (
    Col("preset", 13, left=True),
    Col("variant", 40, left=True),
    Col("train img/s", 12),
    Col("(x)", 7, ".2f"),
    Col("peak GiB", 9, ".2f"),
    Col("fwd b1 ms", 10, ".2f"),
    Col("(x)", 7, ".2f"),
    Col("graphed", 8, ".2f"),
    Col("dpm++20 b1 ms", 14),
    Col("(x)", 7, ".2f"),
    Col("ddim50 b1 ms", 13),
    Col("sample img/s", 13, ".2f"),
    Col("(x)", 7, ".2f"),
)


def format_rows(rows: list[BenchRow]) -> str:
    base: dict[str, BenchRow] = {}
    cells = []
    for r in rows:
        ref = base.setdefault(r.preset, r)  # the first row of a preset is the ratio's base
        cells.append(
            [
                r.preset,
                r.variant,
                r.train_img_s,
                ratio(r.train_img_s, ref.train_img_s),
                r.peak_mem_gib,
                r.fwd_ms_b1,
                ratio(r.fwd_ms_b1, ref.fwd_ms_b1, True),
                r.fwd_graph_ms_b1,
                r.dpmpp20_ms_b1,
                ratio(r.dpmpp20_ms_b1, ref.dpmpp20_ms_b1, True),
                r.ddim50_ms_b1,
                r.sample_img_s,
                ratio(r.sample_img_s, ref.sample_img_s),
            ]
        )
    return (
        table(COLS, cells)
        + "\n(x): speed-up against the preset's first row, measured in this run. graphed: the "
        "batch-1 forward replayed from a CUDA graph (optimised row, CUDA only)."
    )
