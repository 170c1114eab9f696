"""``condiff``: one console script; each subcommand only wires importable functions together."""

from __future__ import annotations

import argparse
import sys

EPILOG = (
    "Run `condiff COMMAND --help` for each command's options. Exit status: 0 done; 2 bad input "
    "or config (the message names the file or field); 1 sample/evaluate skipped some bad "
    "files (listed; the others were written); 75 training stopped early by SIGTERM, "
    "SIGINT or train.max_minutes with a whole checkpoint saved (run again with --resume auto); "
    "130 a second Ctrl-C; 1 anything else."
)
EXIT_INTERRUPTED = 75  # sysexits.h EX_TEMPFAIL: stopped early, state saved, run again
EXIT_SOME_FAILED = 1  # sample / evaluate: some input files were skipped, the rest written


def _add_sampling(p: argparse.ArgumentParser) -> None:
    from condiff.diffusion.samplers import SAMPLERS

    p.add_argument(
        "--estimate",
        choices=["sample", "mean"],
        default="sample",
        help="sample (default): posterior samples, sharp and varied, the perceptual choice; "
        "mean: the posterior mean, the minimum-MSE estimate (highest PSNR, smoother): one "
        "network call, or the average of --num-samples samples",
    )
    p.add_argument(
        "--sampler",
        choices=sorted(SAMPLERS),
        default=None,
        help="sampler (default: the run's sample.sampler, dpmpp_2m)",
    )
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's, 20)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (same seed, same samples)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    p.add_argument(
        "--dtype",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="network precision (default: bf16 on CUDA, fp32 on CPU)",
    )
    _add_speed(p)


def _add_speed(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--no-compile",
        action="store_true",
        help="do not torch.compile the network (compiled by default on CUDA)",
    )
    g.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network on a CPU too (see `condiff bench --cpu-deploy`)",
    )
    p.add_argument(
        "--no-graphs",
        action="store_true",
        help="do not capture the sampling loop in a CUDA graph (on by default on CUDA)",
    )
    p.add_argument(
        "--attention",
        choices=["auto", "sdpa", "triton"],
        default="auto",
        help="attention kernel: condiff's fused Triton kernel for small heads (on CUDA), "
        "PyTorch's SDPA, or auto (default: Triton where it is installed and CUDA is present)",
    )


def _add_int8(p: argparse.ArgumentParser, note: str = "") -> None:
    """The int8 calibration and gate options (``condiff quantize``, ``bench --cpu-deploy``)."""
    p.add_argument("--calib-images", type=int, default=4, help=f"{note}calibration images")
    p.add_argument(
        "--calib-steps", type=int, default=10, help=f"{note}sampler steps recorded per image"
    )
    p.add_argument("--gate-steps", type=int, default=20, help=f"{note}sampler steps for the gate")
    p.add_argument(
        "--max-side", type=int, default=128, help=f"{note}center-crop images to this side"
    )


def _int8(a: argparse.Namespace) -> dict:
    return {
        "calib_images": a.calib_images,
        "calib_steps": a.calib_steps,
        "gate_steps": a.gate_steps,
        "max_side": a.max_side,
    }


def _speed(a: argparse.Namespace) -> dict:
    compile_ = True if a.compile else False if a.no_compile else None
    return {"compile": compile_, "graphs": False if a.no_graphs else None}


def _size(text: str, flag: str) -> tuple[int, int]:
    """``HxW`` or ``N`` (square) -> (H, W); a bad value is a ValueError naming ``flag``."""
    parts = text.lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, 0)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise ValueError(f"{flag} expects HxW or N in pixels (e.g. 256x256), got {text!r}")
    return h, w


def cmd_info(a: argparse.Namespace) -> int:
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


def cmd_train(a: argparse.Namespace) -> int:
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


def cmd_sample(a: argparse.Namespace) -> int:
    from condiff.infer.run import sample_files

    report = sample_files(
        a.checkpoint,
        a.input,
        a.output,
        estimate=a.estimate,
        sampler=a.sampler,
        steps=a.steps,
        num_samples=a.num_samples,
        batch_size=a.batch_size,
        seed=a.seed,
        device=a.device,
        dtype=a.dtype,
        overlap=a.overlap,
        upscale=a.upscale,
        progress=not a.no_progress,
        engine=a.engine,
        onnx_model=a.model,
        strict=a.strict,
        **_speed(a),
    )
    print(f"{report.summary()}\noutput: {a.output}")
    return EXIT_SOME_FAILED if report.skipped else 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from condiff.evaluate.run import evaluate_run

    report = evaluate_run(
        a.checkpoint,
        out_dir=a.output,
        data=a.data,
        images=a.images,
        protocol=a.protocol,
        estimate=a.estimate,
        num_samples=a.num_samples,
        sweep=a.sweep,
        samplers=a.samplers,
        steps=a.steps_list,
        seed=a.seed,
        device=a.device,
        dtype=a.dtype,
        limit=a.limit,
        max_side=a.max_side,
        progress=not a.no_progress,
        strict=a.strict,
        **_speed(a),
    )
    print((report.out_dir / "report.md").read_text())  # type: ignore[union-attr]
    print(f"report folder: {report.out_dir}")
    if report.skipped:
        print(f"{len(report.skipped)} file(s) skipped (listed in report.md)", file=sys.stderr)
        return EXIT_SOME_FAILED
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from condiff.export import export_onnx

    path, err = export_onnx(a.checkpoint, a.output, opset=a.opset, rtol=a.rtol)
    print(
        f"wrote {path} and {path.with_suffix('.json')} (opset {a.opset}, dynamo exporter); "
        f"ONNX Runtime vs PyTorch relative error {err:.2e} on fresh inputs"
    )
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from condiff.export.quantize import quantize_run

    path, report = quantize_run(
        a.checkpoint,
        a.output,
        calibration=a.calibration,
        max_loss_db=a.max_loss_db,
        force=a.force,
        **_int8(a),
    )
    print(f"accuracy gate: {report}")
    print(
        f"wrote {path} (int8 QDQ, ONNX Runtime); sample with "
        f"`condiff sample --engine onnxruntime --model {path}`"
    )
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from condiff.demo import run_demo

    run_demo(
        a.output,
        device=a.device,
        steps=a.steps,
        from_scratch=a.from_scratch,
        progress=not a.no_progress,
    )
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    from condiff.bench import run_bench, run_cpu_deploy

    if a.serve:
        if not a.checkpoint:
            raise ValueError("--serve needs --checkpoint RUN")
        from condiff.serve.loadtest import default_images, format_rows, load_test

        images = default_images(a.images)
        opts = {"upscale": a.upscale} if a.upscale > 1 else None
        speed = ["--no-compile"] if a.no_compile else []  # servers and `condiff sample` alike
        rows = load_test(
            a.checkpoint,
            images,
            requests=a.requests,
            clients=a.clients,
            options=opts,
            server_args=speed,
            cli_args=speed,
            warmup=a.warmup,
        )
        print(f"\ncondiff bench --serve: {a.checkpoint}, images {[str(p) for p in images]}")
        print(format_rows(rows))
        print(
            "!=CLI: responses (warm-up included) that differ from `condiff sample` for the same "
            "image and seed; max|d|: the largest difference, in 8-bit levels; batch: mean "
            "requests per network batch (server metrics); warm-up: untimed requests sent first."
        )
        return 0
    if a.cpu_deploy:
        if not a.checkpoint:
            raise ValueError("--cpu-deploy needs --checkpoint RUN (a trained model, for accuracy)")
        run_cpu_deploy(
            a.checkpoint,
            repeats=a.repeats,
            size=a.size,
            json_path=a.json,
            batches=tuple(a.batches),
            steps=a.deploy_steps,
            out_dir=a.deploy_out,
            quantize=_int8(a),
        )
        return 0

    run_bench(
        presets=a.presets,
        device=a.device,
        batch=a.batch,
        sample_batch=a.sample_batch,
        repeats=a.repeats,
        size=a.size,
        json_path=a.json,
        diffusers=not a.no_diffusers,
        compile_=not a.no_compile,
        profile=a.profile,
        only=a.only,
        train_loop=a.train_loop,
        quick=a.quick,
    )
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    import os

    from condiff.serve.engine import Limits, Translator

    warm = _size(a.warmup, "--warmup") if a.warmup else None  # checked before the model loads
    translator = Translator(
        a.checkpoint,
        engine=a.engine,
        onnx_model=a.model,
        device=a.device,
        dtype=a.dtype,
        **_speed(a),
        limits=Limits(
            max_steps=a.max_steps,
            max_samples=a.max_samples,
            max_upscale=a.max_upscale,
            max_pixels=a.max_pixels,
        ),
    )
    from condiff.serve.app import serve

    max_batch = 1 if a.no_batching else a.max_batch
    if warm:
        import time

        t0 = time.perf_counter()
        sizes = translator.warmup(warm, max_batch)
        print(
            f"warm-up: {a.warmup} at batch sizes {sizes}, estimates sample and mean, "
            f"in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    token = a.token or os.environ.get("CONDIFF_TOKEN") or None
    if a.host not in ("127.0.0.1", "localhost", "::1") and not token:
        print(f"warning: serving on {a.host} without a token (--token or CONDIFF_TOKEN)")
    serve(
        translator,
        host=a.host,
        port=a.port,
        token=token,
        max_batch=max_batch,
        wait_ms=a.batch_wait_ms,
        max_upload_mb=a.max_upload_mb,
    )
    return 0


def cmd_data(a: argparse.Namespace) -> int:
    from condiff.data import export_bundled

    paths = export_bundled(a.output, a.color)
    print(f"wrote {len(paths)} photographs to {a.output}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from condiff.nn.presets import PRESETS

    p = argparse.ArgumentParser(
        prog="condiff",
        description="Train, sample, evaluate and deploy conditional image-to-image diffusion "
        "models (the spec's ConditionalUNet) on folders of paired images.",
        epilog=EPILOG,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser(
        "demo",
        help="train on the bundled photographs (4x super-resolution), "
        "sample the held-out ones, write a report",
        description="The main job: train on scikit-image's bundled photographs for "
        "4x super-resolution (gray, the spec's 2->1 layout), sized for the machine "
        "(on a CPU: fine-tune the shipped BSD400-pretrained 'small' model; on a GPU: train "
        "'seed-default' from scratch), then score the held-out photographs and write a "
        "report: the posterior mean and a sample against bicubic, grids, CSVs.",
    )
    s.add_argument("--output", default="runs/demo", help="run folder (default: runs/demo)")
    s.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    s.add_argument("--steps", type=int, default=None, help="training steps (default: by device)")
    s.add_argument(
        "--from-scratch",
        action="store_true",
        help="CPU: train the small model from random weights (600 steps) instead of "
        "fine-tuning the shipped BSD400-pretrained one (200 steps)",
    )
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_demo)

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
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("overrides", nargs="*", help="section.field=value overrides")
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "sample",
        help="translate your own images with a trained model",
        description="Sample targets for condition images (no ground truth needed). "
        "Keeps file names; writes 8-bit PNG, or 16-bit TIFF for 16-bit inputs. "
        "Images larger than the training crop run as overlapping tiles blended at "
        "every step (window = training crop, overlap = window/4 by default).",
    )
    s.add_argument("--checkpoint", default=None, help="run folder or checkpoint folder")
    s.add_argument(
        "--engine",
        choices=["torch", "onnxruntime"],
        default="torch",
        help="run the network in PyTorch (default) or ONNX Runtime (--model)",
    )
    s.add_argument("--model", default=None, help="ONNX model from `condiff export` (onnxruntime)")
    s.add_argument("--input", required=True, help="an image file or a folder of images")
    s.add_argument("--output", required=True, help="output folder")
    _add_sampling(s)
    s.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="samples per image; >1 also writes per-pixel mean and std (uncertainty)",
    )
    s.add_argument("--batch-size", type=int, default=8, help="images per batch (same-size images)")
    s.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels")
    s.add_argument(
        "--upscale",
        type=int,
        default=1,
        help="bicubic-upscale inputs by this factor first (for super-resolution models "
        "given low-resolution images)",
    )
    s.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable file (default: report it, skip it, write the rest, "
        "exit 1)",
    )
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_sample)

    s = sub.add_parser(
        "evaluate",
        help="PSNR/SSIM/MAE against targets and the task's baseline",
        description="Score the posterior mean (one network call) and samples against the "
        "targets and the task's baseline (bicubic for super-resolution): on a paired folder "
        "(--data ROOT with cond/ and target/), on clean images degraded by the run's task "
        "(--images DIR), by default on the run's own held-out images, or with --protocol sr "
        "on super-resolution test sets as the field scores them. Writes a report folder: "
        "metrics.csv, summary.csv, a plot, grids/, report.md.",
    )
    s.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    s.add_argument("--data", default=None, help="paired root with cond/ and target/")
    s.add_argument(
        "--images",
        nargs="+",
        default=None,
        help="folder of clean images for the run's task; with --protocol sr, one or more "
        "folders of high-resolution test images, each a test set (e.g. Set5 Set14 BSD100)",
    )
    s.add_argument(
        "--protocol",
        choices=["default", "sr"],
        default="default",
        help="default: PSNR/SSIM/MAE on [0, 1]; sr: the field's super-resolution protocol "
        "(mod-crop, 8-bit bicubic input, Y of BT.601 with the border cropped, published rows)",
    )
    s.add_argument(
        "--estimate",
        choices=["both", "mean", "sample"],
        default="both",
        help="which estimates to score: the posterior mean (one network call), samples, or "
        "both (default)",
    )
    s.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="K > 1 adds the mean of K samples (and a std map in the grids)",
    )
    s.add_argument("--output", default=None, help="report folder (default: RUN/eval)")
    s.add_argument(
        "--sweep",
        action="store_true",
        help="quality vs steps: every sampler in --samplers at every --steps-list",
    )
    s.add_argument(
        "--samplers",
        nargs="+",
        default=None,
        help="samplers (default: dpmpp_2m; with --sweep: ddim dpmpp_2m heun)",
    )
    s.add_argument(
        "--steps-list",
        nargs="+",
        type=int,
        default=None,
        help="step counts (default: 20; with --sweep: 5 10 20 50)",
    )
    s.add_argument("--limit", type=int, default=None, help="evaluate at most this many images")
    s.add_argument(
        "--max-side",
        type=int,
        default=None,
        help="center-crop images larger than this (pixels per side)",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None)
    _add_speed(s)
    s.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first unreadable image (default: list it in the report, skip it, "
        "score the rest, exit 1)",
    )
    s.add_argument("--no-progress", action="store_true")
    s.set_defaults(fn=cmd_evaluate)

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
    g.add_argument("--checkpoint", default=None, help="a run or checkpoint folder")
    s.add_argument(
        "--size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        default=None,
        help="input size for the FLOP count (default: initial_img_resolution)",
    )
    s.set_defaults(fn=cmd_info)

    s = sub.add_parser(
        "bench",
        help="speed table: training img/s, latency, sampling throughput",
        description="Measure, side by side in one run, training img/s and peak memory, "
        "forward latency at batch 1, 20-step dpmpp_2m and 50-step ddim latency, and "
        "sampling throughput, for the plain (eager) and the optimised paths.",
    )
    s.add_argument(
        "--presets",
        nargs="+",
        default=None,
        help="presets (default: seed-default seed-rgb480 on CUDA, tiny on CPU)",
    )
    s.add_argument("--device", default="auto")
    s.add_argument("--batch", type=int, default=None, help="training batch")
    s.add_argument("--sample-batch", type=int, default=None, help="batch for sampling throughput")
    s.add_argument("--size", type=int, default=None, help="image side (default: the preset's)")
    s.add_argument("--repeats", type=int, default=10, help="timed repeats (median reported)")
    s.add_argument(
        "--quick",
        action="store_true",
        help="the default (optimised) path against its plain baseline only, 2 repeats, no "
        "diffusers row (on a GPU: eager bf16 vs optimised with the Triton kernel)",
    )
    s.add_argument("--json", default="bench.json", help="where to write the numbers")
    s.add_argument(
        "--no-diffusers", action="store_true", help="skip the diffusers UNet2DModel rows"
    )
    s.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the torch.compile rows (--serve: servers and `condiff sample` not compiled)",
    )
    s.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="run only the rows whose name contains one of these strings, e.g. 'bf16'; "
        "ratios are then against the first row run",
    )
    s.add_argument(
        "--profile",
        action="store_true",
        help="also profile the training step of each bf16 row and print GPU time by kernel family",
    )
    s.add_argument(
        "--train-loop",
        type=int,
        default=0,
        metavar="STEPS",
        help="also time `condiff train`'s own loop (photographs read from disk, EMA, logging) "
        "for 3 log windows of STEPS steps, and print it as a share of the bare training step",
    )
    s.add_argument(
        "--cpu-deploy",
        action="store_true",
        help="CPU deployment paths instead: eager/compiled fp32, compiled bf16, ONNX "
        "Runtime fp32 and int8, at batch 1 and 8, with accuracy (needs --checkpoint)",
    )
    s.add_argument(
        "--serve",
        action="store_true",
        help="load-test `condiff serve` instead: --requests uploads from --clients concurrent "
        "clients, micro-batching on and off, every response checked against `condiff sample` "
        "(needs --checkpoint)",
    )
    s.add_argument("--requests", type=int, default=200, help="--serve: requests per mode")
    s.add_argument("--clients", type=int, default=16, help="--serve: concurrent clients")
    s.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="--serve: untimed requests before the timed ones (default: 2 x --clients)",
    )
    s.add_argument(
        "--upscale",
        type=int,
        default=1,
        help="--serve: each request's upscale option (4 for a 4x super-resolution model fed "
        "low-resolution uploads)",
    )
    s.add_argument(
        "--images", default=None, help="--serve: folder of upload images (default: 2 bundled)"
    )
    s.add_argument("--checkpoint", default=None, help="run folder for --cpu-deploy / --serve")
    s.add_argument(
        "--batches", type=int, nargs="+", default=[1, 8], help="--cpu-deploy batch sizes"
    )
    _add_int8(s, note="--cpu-deploy int8: ")
    s.add_argument(
        "--deploy-out",
        default="bench-deploy",
        help="--cpu-deploy: folder for the exported fp32 and int8 models",
    )
    s.add_argument(
        "--deploy-steps", type=int, default=20, help="--cpu-deploy sampler steps (dpmpp_2m)"
    )
    s.set_defaults(fn=cmd_bench)

    s = sub.add_parser(
        "export",
        help="export the network (EMA weights) to ONNX, checked in ONNX Runtime",
        description="Export to ONNX with torch.onnx's dynamo exporter (opset 23, attention as one Attention op): inputs "
        "x_concat (B, C, H, W) and time (B,), dynamic batch and size. The export is "
        "run in ONNX Runtime against PyTorch on fresh inputs; the command fails if "
        "the relative error exceeds --rtol. Writes MODEL.onnx and MODEL.json "
        "(the run config, for `condiff sample --engine onnxruntime`).",
    )
    s.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    s.add_argument("--output", required=True, help="the .onnx file to write")
    s.add_argument("--opset", type=int, default=23)
    s.add_argument("--rtol", type=float, default=1e-3, help="largest accepted relative error")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser(
        "quantize",
        help="post-training static int8 (ONNX Runtime QDQ) with an accuracy gate",
        description="Export, calibrate on network inputs recorded along real sampling "
        "trajectories (every timestep) of calibration images, quantize Conv/Gemm/weight-MatMul "
        "to int8 (attention's activation MatMuls and Softmax stay float), then sample the run's "
        "held-out images with fp32 and int8 under the same seeds. The int8 model is written only "
        "if its PSNR against the targets is at most --max-loss-db below fp32's (or --force).",
    )
    s.add_argument("--checkpoint", required=True, help="run folder or checkpoint folder")
    s.add_argument("--output", required=True, help="the int8 .onnx file to write")
    s.add_argument(
        "--calibration",
        default=None,
        help="folder of clean images for the run's task (default: the run's training images)",
    )
    _add_int8(s)
    s.add_argument(
        "--max-loss-db",
        type=float,
        default=0.3,
        help="largest accepted PSNR loss of int8 against fp32, in dB (default 0.3)",
    )
    s.add_argument(
        "--force", action="store_true", help="write the int8 model even if the gate fails"
    )
    s.set_defaults(fn=cmd_quantize)

    s = sub.add_parser(
        "serve",
        help="serve a trained model over HTTP: an API and a web page",
        description="Load a model once and serve it: POST /v1/translate (multipart field "
        "'image'; options estimate, sampler, steps, seed, num_samples, upscale, format as query "
        "parameters or form fields), GET /v1/model, GET /healthz, GET /metrics (Prometheus), and "
        "a page at /. Concurrent requests of the same shape and options are micro-batched. "
        "Needs the serve extra: pip install 'condiff[serve]'. SIGTERM finishes the requests in "
        "flight, then stops.",
    )
    s.add_argument("--checkpoint", default=None, help="run or checkpoint folder (torch engine)")
    s.add_argument("--engine", choices=["torch", "onnxruntime"], default="torch")
    s.add_argument("--model", default=None, help="ONNX model (onnxruntime engine)")
    s.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)",
    )
    s.add_argument("--port", type=int, default=8000)
    s.add_argument(
        "--token",
        default=None,
        help="bearer token every endpoint but /healthz requires (or env CONDIFF_TOKEN)",
    )
    s.add_argument("--device", default="auto", help="cuda, cpu or auto (torch engine)")
    s.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default=None)
    s.add_argument("--max-batch", type=int, default=8, help="requests per network batch")
    s.add_argument(
        "--batch-wait-ms", type=float, default=5.0, help="how long a batch waits for company"
    )
    s.add_argument("--no-batching", action="store_true", help="one request per network batch")
    s.add_argument(
        "--warmup",
        default=None,
        metavar="HxW",
        help="before listening, run blank batches of this image size (after upscale, e.g. "
        "256x256) at every batch size requests can form, so compilation and CUDA graph capture "
        "are done before the first request (on a GPU the first requests otherwise wait for them)",
    )
    s.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload (413)")
    s.add_argument(
        "--max-pixels",
        type=int,
        default=4096 * 4096,
        help="largest image, after --upscale (413, checked before decoding)",
    )
    s.add_argument("--max-steps", type=int, default=200, help="largest steps option (422)")
    s.add_argument("--max-samples", type=int, default=16, help="largest num_samples (422)")
    s.add_argument("--max-upscale", type=int, default=8, help="largest upscale option (422)")
    _add_speed(s)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("data", help="write the bundled photographs to a folder")
    s.add_argument("--output", required=True)
    s.add_argument("--color", choices=["gray", "rgb"], default="gray")
    s.set_defaults(fn=cmd_data)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Only torch-free modules here: `condiff sample --engine onnxruntime` runs without torch.
    # (CheckpointError is a RuntimeError.)
    from condiff.config import ConfigError
    from condiff.data.io import ImageError

    try:
        if getattr(args, "attention", "auto") != "auto":
            from condiff.nn import set_attention_kernel

            set_attention_kernel(args.attention)
        return int(args.fn(args) or 0)
    except (
        ConfigError,
        ImageError,
        ValueError,
        FileNotFoundError,
        RuntimeError,
    ) as e:
        print(f"condiff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
