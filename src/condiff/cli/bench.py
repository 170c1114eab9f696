"""``condiff bench``: speed tables measured side by side in one run (one benchmark per mode)."""

from __future__ import annotations

import argparse

from condiff.cli.options import add_int8, int8


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "bench",
        help="speed table: training img/s, latency, sampling throughput",
        description="Measure, side by side in one run, training img/s and peak memory, "
        "forward latency at batch 1, 20-step dpmpp_2m and 50-step ddim latency, and "
        "sampling throughput, for the plain (eager) and the optimised paths. --cpu-deploy and "
        "--serve run the CPU deployment and server load benchmarks instead.",
    )
    _add_rows(s)
    _add_work(s)
    _add_cpu_deploy(s)
    _add_serve(s)
    _add_data(s)
    s.add_argument("--checkpoint", default=None, help="run folder for --cpu-deploy / --serve")
    s.set_defaults(fn=run)


def _add_rows(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("speed rows (the default benchmark)")
    g.add_argument(
        "--presets",
        nargs="+",
        default=None,
        help="presets (default: seed-default seed-rgb480 on CUDA, tiny on CPU)",
    )
    g.add_argument("--device", default="auto")
    g.add_argument("--batch", type=int, default=None, help="training batch")
    g.add_argument("--sample-batch", type=int, default=None, help="batch for sampling throughput")
    g.add_argument("--size", type=int, default=None, help="image side (default: the preset's)")
    g.add_argument("--repeats", type=int, default=10, help="timed repeats (median reported)")
    g.add_argument(
        "--quick",
        action="store_true",
        help="the default (optimised) path against its plain baseline only, 2 repeats, no "
        "diffusers row (on a GPU: eager bf16 vs optimised with the Triton kernel)",
    )
    g.add_argument("--json", default="bench.json", help="where to write the numbers")
    g.add_argument(
        "--no-diffusers", action="store_true", help="skip the diffusers UNet2DModel rows"
    )
    g.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the torch.compile rows (--serve: servers and `condiff sample` not compiled)",
    )
    g.add_argument(
        "--only",
        nargs="+",
        default=None,
        help="run only the rows whose name contains one of these strings, e.g. 'bf16'; "
        "ratios are then against the first row run",
    )
    g.add_argument(
        "--profile",
        action="store_true",
        help="also profile the training step of each bf16 row and print GPU time by kernel family",
    )
    g.add_argument(
        "--train-loop",
        type=int,
        default=0,
        metavar="STEPS",
        help="also time `condiff train`'s own loop (photographs read from disk, EMA, logging) "
        "for 3 log windows of STEPS steps, and print it as a share of the bare training step",
    )


def _add_work(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("the work users do (--recipe, --infer)")
    g.add_argument(
        "--recipe",
        default=None,
        metavar="CONFIG",
        help="time a recipe's own training step at its crop and per-device batch: eager vs "
        "torch.compile of the network (what the SR recipe ships on CUDA) vs compile with CUDA "
        "graphs vs compile of each repeated block (--only picks modes: eager compiled graphed "
        "regional); first step, img/s, minutes to its steps, share of peak",
    )
    g.add_argument(
        "--infer",
        action="store_true",
        help="time whole images through the pipeline (tiled): the one-call mean and a 20-step "
        "sample per --sizes, Mpix/s and share of peak (--checkpoint, or --presets' first with "
        "random weights)",
    )
    g.add_argument(
        "--sizes", type=int, nargs="+", default=[256, 512, 1024], help="--infer output sides"
    )
    g.add_argument(
        "--tiles",
        nargs="+",
        default=[],
        metavar="WINDOW:OVERLAP",
        help="--infer: tile plans timed beside the training window's (window:window/4), e.g. "
        "128:32 256:32",
    )


def _add_cpu_deploy(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("CPU deployment (--cpu-deploy)")
    g.add_argument(
        "--cpu-deploy",
        action="store_true",
        help="CPU deployment paths instead: eager/compiled fp32, compiled bf16, ONNX "
        "Runtime fp32 and int8, at batch 1 and 8, with accuracy (needs --checkpoint)",
    )
    g.add_argument(
        "--batches", type=int, nargs="+", default=[1, 8], help="--cpu-deploy batch sizes"
    )
    add_int8(g, note="--cpu-deploy int8: ")  # type: ignore[arg-type]
    g.add_argument(
        "--deploy-out",
        default="bench-deploy",
        help="--cpu-deploy: folder for the exported fp32 and int8 models",
    )
    g.add_argument(
        "--deploy-steps", type=int, default=20, help="--cpu-deploy sampler steps (dpmpp_2m)"
    )


def _add_serve(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("server load test (--serve)")
    g.add_argument(
        "--serve",
        action="store_true",
        help="load-test `condiff serve` instead: --requests uploads from --clients concurrent "
        "clients, micro-batching on and off, every response checked against `condiff sample` "
        "(needs --checkpoint)",
    )
    g.add_argument("--requests", type=int, default=200, help="--serve: requests per mode")
    g.add_argument("--clients", type=int, default=16, help="--serve: concurrent clients")
    g.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="--serve: untimed requests before the timed ones (default: 2 x --clients)",
    )
    g.add_argument(
        "--upscale",
        type=int,
        default=1,
        help="--serve: each request's upscale option (4 for a 4x super-resolution model fed "
        "low-resolution uploads)",
    )
    g.add_argument(
        "--images", default=None, help="--serve: folder of upload images (default: 2 bundled)"
    )


def _add_data(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("training-loader throughput (--data)")
    g.add_argument(
        "--data",
        default=None,
        metavar="FOLDER",
        help="measure the training loader instead: crops/s from FOLDER (clean images), from it "
        "packed into local shards, and from those shards on a local S3 server (moto)",
    )
    g.add_argument("--workers", type=int, nargs="+", default=None,
                   help="--data: loader worker counts (default 0 and all cores)")  # fmt: skip
    g.add_argument("--crop", type=int, default=64, help="--data: crop side")
    g.add_argument("--seconds", type=float, default=10.0, help="--data: timed seconds per row")
    g.add_argument("--no-s3", action="store_true", help="--data: leave out the S3 rows")
    g.add_argument("--cache-mb", type=float, default=None,
                   help="--data: data.cache_mb (0: decode every crop's image: time the storage)")  # fmt: skip


def run(a: argparse.Namespace) -> int:
    if a.data:
        import os

        from condiff.bench.data_load import run_data_bench

        run_data_bench(
            a.data,
            workers=a.workers or sorted({0, os.cpu_count() or 1}),
            batch=a.batch or 256,
            crop=a.crop,
            seconds=a.seconds,
            s3=not a.no_s3,
            cache_mb=a.cache_mb,
        )
        return 0
    if a.serve:
        return _serve(a)
    if a.recipe:
        from condiff.bench.recipe import MODES, run_recipe_bench

        modes = tuple(m for m in MODES if not a.only or any(o in m for o in a.only))
        run_recipe_bench(
            a.recipe,
            device=a.device,
            batch=a.batch,
            repeats=a.repeats,
            json_path=a.json,
            modes=modes,
        )
        return 0
    if a.infer:
        from condiff.bench.infer import run_infer_bench

        speed = {"compile": False} if a.no_compile else {}
        run_infer_bench(
            a.sizes,
            checkpoint=a.checkpoint,
            preset=(a.presets or ["seed-default"])[0],
            device=a.device,
            repeats=a.repeats,
            json_path=a.json,
            tiles=[_tile_plan(t) for t in a.tiles],
            **speed,
        )
        return 0
    if a.cpu_deploy:
        from condiff.bench.cpu_deploy import run_cpu_deploy

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
            quantize=int8(a),
        )
        return 0
    from condiff.bench.gpu import run_bench

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


def _serve(a: argparse.Namespace) -> int:
    from condiff.bench.serve_load import default_images, format_rows, load_test

    if not a.checkpoint:
        raise ValueError("--serve needs --checkpoint RUN")
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
    if a.json:
        import json
        from dataclasses import asdict
        from pathlib import Path

        Path(a.json).write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(
        "!=CLI: responses (warm-up included) that differ from `condiff sample` for the same "
        "image and seed; max|d|: the largest difference, in 8-bit levels; batch: mean "
        "requests per network batch (server metrics); warm-up: untimed requests sent first."
    )
    return 0


def _tile_plan(text: str) -> tuple[int, int]:
    try:
        win, ov = (int(v) for v in text.split(":"))
    except ValueError:
        raise ValueError(f"--tiles {text!r}: expected WINDOW:OVERLAP, e.g. 128:32") from None
    return win, ov
