"""``condiff``: one console script, one module per command.

Each command module declares its own arguments beside the function that reads them
(``add_parser(sub)`` and ``run(args) -> exit status``); this module only assembles them. Shared
option groups (sampling, speed, int8) are in :mod:`condiff.cli.options`. Only torch-free modules
load at start-up: ``condiff sample --engine onnxruntime`` runs where torch is not installed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

EPILOG = (
    "Run `condiff COMMAND --help` for each command's options. Exit status: 0 done; 2 bad input "
    "or config (the message names the file or field); 1 sample/evaluate skipped some bad "
    "files (listed; the others were written); 75 training stopped early by SIGTERM, "
    "SIGINT or train.max_minutes with a whole checkpoint saved (run again with --resume auto); "
    "130 a second Ctrl-C; 1 anything else."
)
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 75  # sysexits.h EX_TEMPFAIL: stopped early, state saved, run again
EXIT_SOME_FAILED = 1  # sample / evaluate: some input files were skipped, the rest written
EXIT_SECOND_SIGNAL = 130

# In the order `condiff --help` lists them.
COMMANDS = (
    "demo",
    "train",
    "sample",
    "evaluate",
    "info",
    "bench",
    "export",
    "quantize",
    "serve",
    "metrics",
    "data",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="condiff",
        description="Train, sample, evaluate and deploy conditional image-to-image diffusion "
        "models (the spec's ConditionalUNet) on folders of paired images.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"condiff {_version()}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"condiff.cli.{name}").add_parser(sub)
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("condiff")
    except PackageNotFoundError:  # run from a source tree (PYTHONPATH=src)
        return "0.3.0"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # `condiff train` overrides (section.field=value) may sit anywhere on the line
    if (
        rest
        and hasattr(args, "overrides")
        and all("=" in r and not r.startswith("-") for r in rest)
    ):
        args.overrides = [*args.overrides, *rest]
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    # Only torch-free modules here. (CheckpointError is a RuntimeError.)
    from condiff.config import ConfigError
    from condiff.data.io import ImageError

    try:
        if getattr(args, "attention", "auto") != "auto":
            from condiff.nn import set_attention_kernel

            set_attention_kernel(args.attention)
        return int(args.fn(args) or 0)
    except (ConfigError, ImageError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"condiff {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:  # a full disk or a folder it may not write: one line, never a traceback
        from condiff.files import why

        where = f"{e.filename}: " if e.filename else ""
        print(f"condiff {args.command}: error: {where}{why(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_SECOND_SIGNAL
