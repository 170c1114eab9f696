"""``condiff data``: write the bundled photographs to a folder."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("data", help="write the bundled photographs to a folder")
    s.add_argument("--output", required=True)
    s.add_argument("--color", choices=["gray", "rgb"], default="gray")
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from condiff.data import export_bundled

    paths = export_bundled(a.output, a.color)
    print(f"wrote {len(paths)} photographs to {a.output}")
    return 0
