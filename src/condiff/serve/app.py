"""``condiff serve``: a trained model behind an HTTP API and a web page (FastAPI + uvicorn).

Endpoints: ``POST /v1/translate`` (multipart field ``image``; options as query parameters or
form fields), ``GET /v1/model``, ``GET /healthz``, ``GET /metrics`` (Prometheus text) and
``GET /`` (the page). Concurrent requests with the same shape and options are micro-batched
through one pipeline. Hostile input gets a 4xx and a message: an upload over the size limit
(413), an image over the pixel limit (413, before decoding), a file that is not an image or is
truncated, wrong channel counts, absurd options (422). An optional bearer token guards every
endpoint but ``/healthz``.
"""

from __future__ import annotations

import base64
import hmac
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from condiff.data.io import ImageError, ImageTooLarge
from condiff.serve.batching import MicroBatcher
from condiff.serve.engine import OptionError, Translator, parse_options

try:
    import prometheus_client as prom
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
except ImportError as e:  # pragma: no cover - the optional extra
    raise ImportError(
        f"condiff serve needs the serve extra: pip install 'condiff[serve]' ({e})"
    ) from None

OPEN_PATHS = ("/healthz",)


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, before parsing them
    (by Content-Length, and by counting for chunked uploads)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks, total, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            total += len(msg.get("body", b""))
            if total > self.max_bytes:
                return await self._refuse(scope, receive, send)
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> dict:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        mb = self.max_bytes / 2**20
        resp = JSONResponse(
            {"detail": f"upload larger than the limit of {mb:.1f} MiB (--max-upload-mb)"},
            status_code=413,
        )
        await resp(scope, receive, send)


def create_app(
    translator: Translator,
    *,
    token: str | None = None,
    max_batch: int = 8,
    wait_ms: float = 5.0,
    max_upload_bytes: int = 20 * 2**20,
) -> Any:
    """The ASGI app around a loaded :class:`Translator`."""
    registry = prom.CollectorRegistry()
    requests = prom.Counter(
        "condiff_requests", "HTTP requests", ["path", "status"], registry=registry
    )
    latency = prom.Histogram(
        "condiff_request_seconds",
        "request latency",
        ["path"],
        buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100),
        registry=registry,
    )
    batch_size = prom.Histogram(
        "condiff_batch_size",
        "jobs per network batch",
        buckets=(1, 2, 4, 8, 16, 32),
        registry=registry,
    )
    batch_seconds = prom.Histogram("condiff_batch_seconds", "seconds per batch", registry=registry)
    batcher = MicroBatcher(
        translator.run,
        max_batch=max_batch,
        wait_s=wait_ms / 1000,
        on_batch=lambda n, s: (batch_size.observe(n), batch_seconds.observe(s)),
    )
    prom.Gauge("condiff_queue_depth", "jobs waiting or running", registry=registry).set_function(
        lambda: batcher.depth
    )

    @asynccontextmanager
    async def lifespan(app: Any):
        batcher.start()
        yield
        await batcher.stop()  # uvicorn has let the requests in flight finish

    app = FastAPI(title="condiff", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.middleware("http")
    async def guard_and_measure(request: Request, call_next: Any) -> Response:
        t0 = time.perf_counter()
        path = request.url.path
        if token and path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            given = given[7:] if given.lower().startswith("bearer ") else ""
            given = given or request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                resp: Response = JSONResponse(
                    {"detail": "a bearer token is required (Authorization: Bearer TOKEN)"},
                    status_code=401,
                )
                requests.labels(path, "401").inc()
                return resp
        resp = await call_next(request)
        requests.labels(path, str(resp.status_code)).inc()
        latency.labels(path).observe(time.perf_counter() - t0)
        return resp

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model")
    async def model() -> dict:
        return translator.describe()

    @app.get("/metrics")
    async def metrics() -> Response:
        return PlainTextResponse(
            prom.generate_latest(registry), media_type=prom.CONTENT_TYPE_LATEST
        )

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("condiff.serve").joinpath("page.html").read_text())

    @app.post("/v1/translate")
    async def translate(request: Request) -> Response:
        t0 = time.perf_counter()
        try:
            form = await request.form()
        except Exception as e:  # not multipart, or a broken one
            return _error(400, f"expected a multipart/form-data upload with a field 'image' ({e})")
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return _error(422, "the multipart field 'image' (an image file) is required")
        raw = {**request.query_params, **{k: v for k, v in form.items() if k != "image"}}
        raw.pop("token", None)
        try:
            opts = parse_options(
                {k: str(v) for k, v in raw.items()}, translator.defaults, translator.limits
            )
            job = translator.prepare(await upload.read(), opts)
        except ImageTooLarge as e:
            return _error(413, str(e))
        except (OptionError, ImageError) as e:
            return _error(422, str(e))
        result = await batcher.submit(job)
        if opts.format == "json" or "application/json" in request.headers.get("accept", ""):
            h, w = job.cond.shape[1:]
            return JSONResponse(
                {
                    "width": w,
                    "height": h,
                    "seconds": time.perf_counter() - t0,
                    "nfe": result.nfe,
                    "options": opts.__dict__,
                    "media_type": "image/png",
                    "outputs": {
                        k: [base64.b64encode(b).decode() for b in v]
                        for k, v in result.pngs().items()
                    },
                }
            )
        data, media = result.file()
        return Response(data, media_type=media, headers={"X-Condiff-NFE": str(result.nfe)})

    return BodyLimit(app, max_upload_bytes)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def serve(
    translator: Translator,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_batch: int = 8,
    wait_ms: float = 5.0,
    max_upload_mb: float = 20.0,
) -> None:
    """Run the server until SIGTERM / Ctrl-C (requests in flight are finished first)."""
    import uvicorn

    app = create_app(
        translator,
        token=token,
        max_batch=max_batch,
        wait_ms=wait_ms,
        max_upload_bytes=int(max_upload_mb * 2**20),
    )
    uvicorn.run(app, host=host, port=port, timeout_graceful_shutdown=60, log_level="info")
