"""One recipe of the super-resolution study: train with the real CLI, then score the checkpoints.

    python scripts/sr_study.py --name R1 --config configs/sr4-gray.yaml --data DATA --out OUT \
        [--gpus 2] [section.field=value ...] [--sets ...] [--sample-sets ...]

DATA holds ``train/bsd400`` and ``test/{Set5,Set14,BSD100}`` (the layout of the shared SR data).
Training is ``condiff train`` (under ``torchrun`` for ``--gpus`` > 1); every checkpoint is
scored with ``condiff evaluate --protocol sr`` (posterior mean, one network call) on every test
set, and the last one also with single samples and with the raw (non-EMA) weights. Writes
``OUT/NAME/result.json`` and prints one table row per checkpoint: training minutes, steps and
mean PSNR per set. ``scripts/sr_table.py`` turns several results into the NOTES table and plot.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SETS = ("Set5", "Set14", "BSD100")


def train(args: argparse.Namespace, run: Path) -> float:
    overrides = [
        f"data.root={args.data}/train/bsd400",
        f"train.output_dir={run}",
        *args.overrides,
    ]
    launcher = [sys.executable]
    if args.gpus > 1:
        launcher += ["-m", "torch.distributed.run", f"--nproc-per-node={args.gpus}"]
    cmd = [*launcher, "-m", "condiff.cli", "train", "--config", args.config, "--no-progress"]
    cmd += overrides
    t0 = time.perf_counter()
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def score(
    ckpt: Path, args: argparse.Namespace, sets: list[str], estimate: str, **kw
) -> dict[str, dict[str, float]]:
    from condiff.evaluate.run import evaluate_run

    rep = evaluate_run(
        ckpt,
        out_dir=ckpt.parent.parent / "eval" / f"{ckpt.name}-{estimate}{kw.pop('tag', '')}",
        images=[f"{args.data}/test/{s}" for s in sets],
        protocol="sr",
        estimate=estimate,
        progress=False,
        compile=False,
        device=args.device,
        **kw,
    )
    out: dict[str, dict[str, float]] = {}
    for m in rep.means():
        out.setdefault(str(m["method"]), {})[str(m["group"])] = {
            k: float(m[k]) for k in ("psnr_y", "ssim_y", "lr_consistency") if k in m
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--sets", nargs="+", default=list(SETS), help="test sets for the mean")
    p.add_argument("--sample-sets", nargs="*", default=list(SETS), help="test sets for samples")
    p.add_argument("--skip-train", action="store_true", help="score an existing run folder")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    for s in (*args.sets, *args.sample_sets):
        if "=" in s:  # an override swallowed by --sets / --sample-sets
            p.error(f"put section.field=value overrides before --sets/--sample-sets, got {s!r}")
    from condiff.checkpoint import read_state

    run = Path(args.out) / args.name
    wall = 0.0 if args.skip_train else train(args, run)
    ckpts = sorted((run / "checkpoints").glob("step_*"))
    result: dict = {"name": args.name, "overrides": args.overrides, "wall_s": wall, "points": []}
    for c in ckpts:
        state = read_state(c)
        minutes = float(state.get("train_seconds", float("nan"))) / 60
        final = c == ckpts[-1]
        # the last checkpoint: mean and samples in one pass, with grids (bicubic | mean | sample)
        est = "both" if final and args.sample_sets else "mean"
        sets = (
            sorted(set(args.sets) | set(args.sample_sets), key=SETS.index) if final else args.sets
        )
        means = score(c, args, sets, est, grids=final)
        point = {"step": int(state["step"]), "minutes": minutes, "mean": means["mean"]}
        result["points"].append(point)
        psnr = "  ".join(f"{s} {means['mean'][s]['psnr_y']:.2f}" for s in args.sets)
        base = "  ".join(f"{s} {means['baseline'][s]['psnr_y']:.2f}" for s in args.sets)
        print(f"[{args.name}] step {point['step']:>6} {minutes:6.2f} min  mean: {psnr}", flush=True)
        result["bicubic"] = means["baseline"]
        key = next((k for k in means if k.startswith("sample")), None)
        if final and key:
            result["sample"] = {"method": key, **means[key]}
            print(
                f"[{args.name}] {key}: "
                + "  ".join(
                    f"{s} {means[key][s]['psnr_y']:.2f} (LR {means[key][s]['lr_consistency']:.1f})"
                    for s in args.sample_sets
                ),
                flush=True,
            )
    last = ckpts[-1]
    print(f"[{args.name}] bicubic: {base}", flush=True)
    raw = score(last, args, args.sets, "mean", tag="-raw", use_ema=False, grids=False)
    result["mean_raw_weights"] = raw["mean"]
    print(
        f"[{args.name}] raw weights, mean: "
        + "  ".join(f"{s} {raw['mean'][s]['psnr_y']:.2f}" for s in args.sets),
        flush=True,
    )
    result["report"] = str(run / "eval" / f"{last.name}-{'both' if args.sample_sets else 'mean'}")
    (run / "result.json").write_text(json.dumps(result, indent=1))
    dest = os.environ.get("OUT")
    if dest:
        Path(dest).mkdir(parents=True, exist_ok=True)
        Path(dest, f"{args.name}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
