"""``condiff train``: train from a YAML run config, with ``section.field=value`` overrides."""

from __future__ import annotations

import argparse

from condiff.cli.options import add_no_progress


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "train",
        help="train a model from a YAML config",
        description="Train from a YAML run config (see configs/). Extra "
        "`section.field=value` arguments override the file, e.g. train.lr=1e-4. "
        "Ctrl-C or SIGTERM saves a checkpoint before exiting; --resume auto "
        "continues from the newest whole one.",
    )
    s.add_argument("--config", required=True, help="YAML run config")
    s.add_argument(
        "--resume",
        default=None,
        help="'auto' (newest whole checkpoint in the run folder, if any) or a checkpoint path",
    )
    add_no_progress(s, "no progress bar")
    s.add_argument("overrides", nargs="*", help="section.field=value overrides")
    s.set_defaults(fn=run)


def run(a: argparse.Namespace) -> int:
    from condiff.cli import EXIT_INTERRUPTED
    from condiff.config import load_config
    from condiff.train import fit
    from condiff.train.distributed import is_main_process

    cfg = load_config(a.config, a.overrides)
    result = fit(cfg, resume=a.resume, progress=not a.no_progress)
    if not is_main_process():  # rank 0 speaks for the run
        return EXIT_INTERRUPTED if result.interrupted else 0
    if result.interrupted:
        print(
            f"interrupted ({result.stop_reason}) at step {result.step}/{cfg.train.steps}: "
            f"checkpoint {result.checkpoint} saved; continue with --resume auto "
            f"(exit status {EXIT_INTERRUPTED})",
            flush=True,  # a scheduler may kill us soon after
        )
        return EXIT_INTERRUPTED
    print(
        f"done: step {result.step}, checkpoint {result.checkpoint}, "
        f"TensorBoard logs in {result.run_dir / 'tb'}"
    )
    rates = [h["img_per_s"] for h in result.history if "img_per_s" in h]
    if len(rates) >= 2:  # the first window includes start-up (and compilation)
        print(f"training speed: {rates[-1]:.1f} img/s over the last log window")
        print("img/s per log window (last 10): " + " ".join(f"{r:.1f}" for r in rates[-10:]))
    return 0
