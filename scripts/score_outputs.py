"""Score SR outputs made elsewhere (a GPU call) with the sr protocol, here: Y PSNR/SSIM (border
4), LPIPS, DISTS and KID/FID on crops, per set; report.md, plots and JSON as `condiff evaluate`
writes them. The outputs are `condiff sample --upscale 4` of the LR inputs that
scripts/perceptual_data.py writes (the protocol's own 8-bit bicubic downscales).

    python scripts/score_outputs.py --sr ../shared/data/sr --out report-dir \
        --outputs mean:1:mean=DIR perceptual:1:perceptual=DIR sample:50:"sample (ddpm 50)"=DIR

Each DIR holds Set5/, Set14/, BSD100/ of NAME.png or NAME.webp (lossless).

    python scripts/score_outputs.py --replot REPORT --out NEW [--keep LABEL ...]

rebuilds a report (tables, plots) from an earlier one's metrics.csv and means.json, keeping the
baseline and the methods named.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from condiff.data.io import from_model
from condiff.evaluate.kid import SetScores
from condiff.evaluate.perceptual import Perceptual
from condiff.evaluate.protocols.sr import SRProtocol
from condiff.evaluate.report import Report, Row
from condiff.evaluate.writer import write_report

SETS = ("Set5", "Set14", "BSD100")


def read_output(folder: Path, name: str) -> np.ndarray:
    for ext in (".png", ".webp"):
        if (folder / f"{name}{ext}").is_file():
            arr = np.asarray(Image.open(folder / f"{name}{ext}").convert("RGB"))
            return arr.astype(np.float32) / 255
    raise FileNotFoundError(f"{folder}/{name}.png or .webp: missing")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sr")
    ap.add_argument("--out", required=True)
    ap.add_argument("--outputs", nargs="+", default=[], help="ESTIMATE:NFE:LABEL=DIR")
    ap.add_argument("--replot", default=None, help="an earlier report folder to rebuild from")
    ap.add_argument("--keep", nargs="*", default=None, help="--replot: the methods to keep")
    ap.add_argument("--kid-crop", type=int, default=128)
    ap.add_argument("--metrics", nargs="*", default=["lpips", "dists"])
    ap.add_argument("--no-kid", action="store_true")
    ap.add_argument("--sets", nargs="+", default=list(SETS), help="the test sets to score")
    a = ap.parse_args()
    if a.replot:
        replot(Path(a.replot), Path(a.out), a.keep)
        return
    methods = []
    for spec in a.outputs:
        head, folder = spec.split("=", 1)
        est, nfe, label = head.split(":", 2)
        methods.append((est, int(nfe), label, Path(folder)))
    proto = SRProtocol(factor=4)
    items = proto.items([Path(a.sr) / "test" / s for s in a.sets], color="rgb")
    scorer = Perceptual(a.metrics)
    sets = None if a.no_kid else SetScores(a.kid_crop, a.kid_crop)
    report = Report(out_dir=Path(a.out))
    report.out_dir.mkdir(parents=True, exist_ok=True)
    for n, it in enumerate(items):
        tgt = from_model(it.target)
        if sets is not None:
            sets.add((it.group,), "", None, tgt)
        base = np.round(from_model(proto.baseline(it.cond)) * 255) / 255
        for est, nfe, label, folder in [("baseline", 0, "baseline", None), *methods]:
            pred = base if folder is None else read_output(folder / it.group, it.name)
            if pred.shape != tgt.shape:
                raise ValueError(f"{folder}/{it.group}/{it.name}: {pred.shape} vs {tgt.shape}")
            scores = {**proto.score(it, pred, tgt), **scorer.scores(pred, tgt)}
            if sets is not None:
                sets.add((it.group,), "", label, pred)
            report.rows.append(Row(it.group, it.name, label, est, "", 0, nfe, 0.0, scores))
        print(f"{n + 1}/{len(items)} {it.group}/{it.name}", flush=True)
    if sets is not None:
        report.set_scores = sets.scores()
        report.notes.append(f"KID / FID on {a.kid_crop} px non-overlapping crops per set.")
    write_report(report, proto)
    means = report.means()
    (report.out_dir / "means.json").write_text(json.dumps(means, indent=1))
    print((report.out_dir / "report.md").read_text())


def replot(src: Path, out: Path, keep: list[str] | None) -> None:
    import csv

    report = Report(out_dir=out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"group", "level", "image", "method", "estimate", "sampler", "steps", "nfe", "seconds"}
    for r in csv.DictReader((src / "metrics.csv").open()):
        if keep is not None and r["estimate"] != "baseline" and r["method"] not in keep:
            continue
        scores = {k: float(v) for k, v in r.items() if k not in info and v != ""}
        report.rows.append(
            Row(r["group"], r["image"], r["method"], r["estimate"], r["sampler"],
                int(r["steps"]), int(r["nfe"]), float(r["seconds"]), scores, r["level"])
        )  # fmt: skip
    for m in json.loads((src / "means.json").read_text()):
        if "kid" in m:
            key = (m["group"], m["level"], m["method"])
            report.set_scores[key] = {"kid": m["kid"], "fid": m["fid"], "crops": m["kid_crops"]}
    write_report(report, SRProtocol(factor=4))
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
