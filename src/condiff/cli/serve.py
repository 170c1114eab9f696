"""``condiff serve``: a trained model behind an HTTP API and a web page."""

from __future__ import annotations

import argparse

from condiff.cli.options import add_dtype, add_speed, parse_size, speed


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "serve",
        help="serve a trained model over HTTP: an API and a web page",
        description="Load a model once and serve it: POST /v1/translate (multipart field "
        "'image'; options estimate, sampler, steps, seed, num_samples, upscale, format, and "
        "noise_level (a std on the 0-255 scale, or auto) for a denoiser trained with a "
        "noise-level map, as query parameters or "
        "form fields), GET /v1/model, GET /healthz, GET /metrics (Prometheus), and "
        "a page at /. Concurrent requests of the same shape and options are micro-batched. "
        "Needs the serve extra: pip install 'condiff[serve]'. SIGTERM stops accepting, finishes "
        "the requests in flight (at most --drain-timeout seconds), then stops. POST /v1/jobs "
        "answers at once with a job id to poll (GET /v1/jobs/ID: progress, then outputs).",
    )
    s.add_argument(
        "--checkpoint", default=None, help="run or checkpoint folder, or pretrained:NAME (torch)"
    )
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
    add_dtype(s)
    _add_batching(s)
    _add_limits(s)
    add_speed(s)
    s.set_defaults(fn=run)


def _add_batching(s: argparse.ArgumentParser) -> None:
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


def _add_limits(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--drain-timeout",
        type=float,
        default=None,
        metavar="S",
        help="on SIGTERM, finish the requests in flight for at most S seconds, then answer the "
        "rest 503 with Retry-After and stop their work (default: wait for all of them). Under "
        "Kubernetes set terminationGracePeriodSeconds above S plus the start-up of a request",
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


def run(a: argparse.Namespace) -> int:
    import os
    import time

    from condiff.serve.engine import Limits, Translator

    warm = parse_size(a.warmup, "--warmup") if a.warmup else None  # before the model loads
    limits = Limits(
        max_steps=a.max_steps,
        max_samples=a.max_samples,
        max_upscale=a.max_upscale,
        max_pixels=a.max_pixels,
    )
    translator = Translator(
        a.checkpoint,
        engine=a.engine,
        onnx_model=a.model,
        device=a.device,
        dtype=a.dtype,
        limits=limits,
        **speed(a),
    )
    from condiff.serve.app import serve

    max_batch = 1 if a.no_batching else a.max_batch
    if warm:
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
        drain_timeout=a.drain_timeout,
    )
    return 0
