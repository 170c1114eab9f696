"""``condiff info``: the network's per-level structure, parameters and GFLOP."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from condiff.nn.presets import PRESETS

    s = sub.add_parser(
        "info",
        help="per-level table: resolution, channels, attention, params, GFLOP",
        description="Print the network's per-level structure, parameters and GFLOP per "
        "image (attention's matrix products counted explicitly).",
    )
    g = s.add_mutually_exclusive_group()
    g.add_argument(
        "--preset",
        default="seed-default",
        choices=sorted(PRESETS),
        help="a named preset (default: seed-default)",
    )
    g.add_argument(
        "--checkpoint", default=None, help="a run or checkpoint folder, or pretrained:NAME"
    )
    s.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="input size for the FLOP count (default: initial_img_resolution)",
    )
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from condiff.nn import ConditionalUNet
    from condiff.nn.summary import format_table, level_table

    if a.checkpoint:
        from condiff.infer import load

        pipe = load(a.checkpoint, device="cpu")
        model, title = pipe.model, f"checkpoint {pipe.source}"
    else:
        model, title = ConditionalUNet.from_preset(a.preset), f"preset {a.preset}"
    h = a.size[0] if a.size else None
    w = a.size[1] if a.size else None
    res = model.config["initial_img_resolution"]
    print(
        f"ConditionalUNet, {title}: {model.in_img_channels} -> {model.out_img_channels} channels, "
        f"FLOPs per image at {h or res}x{w or res}"
    )
    print(format_table(model, level_table(model, h, w)))
    return 0
