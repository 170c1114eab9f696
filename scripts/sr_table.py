"""The recipe table and the quality-per-minute plot from ``scripts/sr_study.py`` logs.

    python scripts/sr_table.py docs/bench/sr/*.log --plot docs/images/sr4-quality-vs-minutes.png

Reads each log's command line (GPUs, crop, batch) and its ``[NAME] ...`` result lines, prints a
Markdown table (one row per run: mean and sample PSNR on each test set at the last checkpoint)
and plots the posterior mean's PSNR against training minutes, with bicubic and the published
rows as reference lines.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

SETS = ("Set5", "Set14", "BSD100")
POINT = re.compile(
    r"^\[(?P<name>[^\]]+)\] step\s+(?P<step>\d+)\s+(?P<min>[\d.]+) min\s+mean: (?P<rest>.*)$"
)
SAMPLE = re.compile(r"^\[(?P<name>[^\]]+)\] (?P<method>sample \([^)]*\)): (?P<rest>.*)$")
BICUBIC = re.compile(r"^\[(?P<name>[^\]]+)\] bicubic: (?P<rest>.*)$")


def _psnrs(rest: str) -> dict[str, float]:
    return {m[1]: float(m[2]) for m in re.finditer(r"(Set5|Set14|BSD100) ([\d.]+)", rest)}


def parse(path: Path) -> dict:
    run: dict = {"points": [], "gpus": 1, "crop": 120, "batch": None, "sample": None}
    for line in path.read_text().splitlines():
        if line.startswith("$ "):
            if m := re.search(r"--nproc-per-node=(\d+)", line):
                run["gpus"] = int(m[1])
            if m := re.search(r"data\.crop_size=(\d+)", line):
                run["crop"] = int(m[1])
            if m := re.search(r"train\.batch_size=(\d+)", line):
                run["batch"] = int(m[1])
            if m := re.search(r"--config (\S+)", line):
                run["config"] = m[1]
        elif m := POINT.match(line):
            run["name"] = m["name"]
            run["points"].append((int(m["step"]), float(m["min"]), _psnrs(m["rest"])))
        elif m := SAMPLE.match(line):
            run["sample"] = (m["method"], _psnrs(m["rest"]))
        elif m := BICUBIC.match(line):
            run["bicubic"] = _psnrs(m["rest"])
    return run


def table(runs: list[dict]) -> str:
    lines = [
        "| run | crop | batch | GPUs | steps | train min | GPU-min | mean Set5 / Set14 / BSD100 "
        "| sample (dpmpp_2m 20) Set5 / Set14 / BSD100 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        step, minutes, mean = r["points"][-1]
        smp = r["sample"][1] if r["sample"] else {}
        lines.append(
            f"| {r['name']} | {r['crop']} | {r['batch']} | {r['gpus']} | {step} | {minutes:.2f} | "
            f"{minutes * r['gpus']:.2f} | "
            + " / ".join(f"{mean[s]:.2f}" for s in SETS)
            + " | "
            + (" / ".join(f"{smp[s]:.2f}" for s in SETS if s in smp) or "not reached")
            + " |"
        )
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from condiff.evaluate.sr import PUBLISHED

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    for ax, s in zip(axes, SETS, strict=True):
        for i, r in enumerate(runs):
            xs = [p[1] for p in r["points"]]
            ys = [p[2][s] for p in r["points"]]
            label = f"{r['name']} ({r['gpus']} GPU{'s' if r['gpus'] > 1 else ''})"
            ax.plot(xs, ys, marker="o", color=f"C{i}", label=label)
        styles = {"bicubic": ":", "SRCNN": "--", "VDSR": "-."}
        for name, figs in PUBLISHED[4].items():
            key = name.split()[0]
            if key in styles:
                ax.axhline(figs[s][0], color="0.3", ls=styles[key], lw=1, label=f"{key}, published")
        ax.set_title(s)
        ax.set_xlabel("training minutes (wall clock, H200)")
        ax.set_ylabel("posterior mean, PSNR on Y (dB)")
        ax.grid(True, alpha=0.3)
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.suptitle("seed-default, gray 4x SR on BSD400: the one-call posterior mean vs training time")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("logs", nargs="+", type=Path)
    p.add_argument("--plot", type=Path, default=None, help="write the plot here (PNG)")
    a = p.parse_args()
    runs = [r for r in (parse(x) for x in a.logs) if r["points"]]
    print(table(runs))
    if a.plot:
        plot(runs, a.plot)
        print(f"plot: {a.plot}")


if __name__ == "__main__":
    main()
