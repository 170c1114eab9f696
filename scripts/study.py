"""One run of a task study on a GPU: train with the real CLI, then score with `condiff evaluate`.

    python scripts/study.py --name D1 --config configs/denoise-gray.yaml --data DATA \
        --protocol denoise --sets Set12 BSD68 [--samples dpmpp_2m:20 ddpm:100:1] \
        [--gpus 2] [--sample-limit N] -- [section.field=value ...]

DATA holds ``train/bsd400`` and ``test/SET``. Training is ``condiff train`` (under ``torchrun``
for ``--gpus`` > 1); the last checkpoint is scored with ``condiff evaluate --protocol P`` on
every set: the one-call posterior mean on all images, and the samples (``--samples``, each
SAMPLER:STEPS[:ETA]; default the run's sample settings) on the first ``--sample-limit`` images
of each set. Writes ``OUT/NAME/result.json`` (wall times, every mean) and prints one line per
figure, so the log alone carries the results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def train(args: argparse.Namespace, run: Path) -> float:
    cmd = [sys.executable]
    if args.gpus > 1:
        cmd += ["-m", "torch.distributed.run", f"--nproc-per-node={args.gpus}"]
    cmd += [
        "-m",
        "condiff.cli",
        "train",
        "--config",
        args.config,
        "--no-progress",
        f"data.root={args.data}/train/bsd400",
        f"train.output_dir={run}",
        *args.overrides,
    ]
    t0 = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc not in (0, 75):  # 75: stopped early (train.max_minutes) with a whole checkpoint saved
        raise SystemExit(f"condiff train failed with exit status {rc}")
    return time.perf_counter() - t0


def score(
    args: argparse.Namespace,
    run: Path,
    estimate: str,
    samples: list[str] | None,
    limit: int | None,
    tag: str,
    grids: bool = True,
) -> tuple[list[dict], float]:
    from condiff.evaluate.run import evaluate_run

    t0 = time.perf_counter()
    rep = evaluate_run(
        run,
        out_dir=run / "eval" / tag,
        images=[f"{args.data}/test/{s}" for s in args.sets],
        protocol=args.protocol,
        estimate=estimate,
        samples=samples,
        limit=limit,
        progress=False,
        compile=False,
        grids=grids,
    )
    return rep.means(), time.perf_counter() - t0


def show(name: str, means: list[dict], keys: tuple[str, ...]) -> None:
    for m in sorted(means, key=lambda m: (str(m["level"]), str(m["group"]), str(m["method"]))):
        vals = "  ".join(f"{k} {m[k]:.4f}" for k in keys if k in m)
        print(f"[{name}] {m['group']} {m['level']} {m['method']}: {vals}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="/tmp/study")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--protocol", required=True, choices=["sr", "denoise", "jpeg"])
    p.add_argument("--sets", nargs="+", required=True)
    p.add_argument("--samples", nargs="*", default=None, help="SAMPLER:STEPS[:ETA] specs")
    p.add_argument(
        "--sample-limit", type=int, default=None, help="images per set for samples (0: none)"
    )
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    run = Path(args.out) / args.name
    wall = 0.0 if args.skip_train else train(args, run)
    from condiff.checkpoint import latest_checkpoint, read_state

    state = read_state(latest_checkpoint(run / "checkpoints"))
    result: dict = {
        "name": args.name,
        "overrides": args.overrides,
        "wall_s": wall,
        "train_minutes": float(state.get("train_seconds", 0)) / 60,
        "step": int(state["step"]),
    }
    print(
        f"[{args.name}] trained to step {result['step']} in {result['train_minutes']:.2f} min "
        f"(wall {wall / 60:.2f} min)",
        flush=True,
    )
    keys = ("psnr", "ssim", "psnr_b", "psnr_y", "ssim_y", "lpips", "dists", "psnr_rgb")
    result["mean"], t_mean = score(args, run, "mean", None, None, "mean", grids=False)
    show(args.name, result["mean"], keys)
    result["samples"], t_smp = [], 0.0
    if args.sample_limit != 0:  # 0: the mean only
        result["samples"], t_smp = score(
            args, run, "both", args.samples, args.sample_limit, "samples"
        )
        show(args.name, result["samples"], keys)
    result["eval_s"] = {"mean": t_mean, "samples": t_smp}
    print(f"[{args.name}] evaluation: mean {t_mean:.0f} s, samples {t_smp:.0f} s", flush=True)
    (run / "result.json").write_text(json.dumps(result, indent=1))
    dest = os.environ.get("OUT")
    if dest:
        d = Path(dest) / args.name
        d.mkdir(parents=True, exist_ok=True)
        (d / "result.json").write_text(json.dumps(result, indent=1))
        for tag in ("mean", "samples"):
            for f in ("report.md", "summary.csv", "metrics.csv"):
                if (run / "eval" / tag / f).is_file():
                    shutil.copy(run / "eval" / tag / f, d / f"{tag}-{f}")
        shutil.copy(run / "metrics.jsonl", d / "metrics.jsonl")


if __name__ == "__main__":
    main()
