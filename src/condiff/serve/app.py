"""``condiff serve``: a trained model behind an HTTP API and a web page (FastAPI + uvicorn).

Endpoints: ``POST /v1/translate`` (multipart field ``image``; options as query parameters or
form fields; the answer when it is done), ``POST /v1/jobs`` (the same, answered at once with a
job id), ``GET /v1/jobs/{id}`` (state, progress such as ``sample: step 7/20, tile 3/12``, and the
outputs when done), ``DELETE /v1/jobs/{id}`` (cancel), ``GET /v1/model``, ``GET /healthz``,
``GET /metrics`` (Prometheus text) and ``GET /`` (the page).

Concurrent requests with the same shape and options are micro-batched through one pipeline.
Hostile input gets a 4xx and a message. A request whose client goes away is cancelled: dropped
from the queue, or stopped at its next network call. SIGTERM stops accepting and finishes the
requests in flight; ``drain_timeout`` bounds that, after which the rest get 503 + Retry-After.
"""

from __future__ import annotations

import asyncio
import base64
import time
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from condiff.data.io import ImageError, ImageTooLarge
from condiff.infer.outputs import NonFiniteOutput
from condiff.infer.progress import Cancelled
from condiff.serve.batching import MicroBatcher
from condiff.serve.engine import Job, OptionError, Translator, parse_options
from condiff.serve.gate import Gate, Metrics

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
except ImportError as e:  # pragma: no cover - the optional extra
    raise ImportError(
        f"condiff serve needs the serve extra: pip install 'condiff[serve]' ({e})"
    ) from None

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" '
    'rx="6" fill="#4a7bd0"/><path d="M6 22c4-10 8-10 10 0s6 10 10 0" stroke="#fff" '
    'stroke-width="3" fill="none"/></svg>'
)


class Server:
    """The app's state: the translator, the batcher, the jobs, the metrics, draining."""

    def __init__(
        self,
        translator: Translator,
        *,
        max_batch: int,
        wait_ms: float,
        drain_timeout: float | None,
        job_ttl: float = 30.0,
    ) -> None:
        self.translator = translator
        self.metrics = Metrics()
        self.batcher = MicroBatcher(
            translator.run,
            max_batch=max_batch,
            wait_s=wait_ms / 1000,
            on_batch=self.metrics.batch,
        )
        self.metrics.queue_depth(lambda: self.batcher.depth)
        self.jobs: dict[str, tuple[Job, asyncio.Future, float]] = {}  # async jobs: id -> ...
        self.inflight: dict[str, Job] = {}  # every job not finished yet, by id
        self.draining = False
        self.drain_timeout = drain_timeout
        self.job_ttl = job_ttl  # an async job nobody polls for this long is cancelled

    def start_drain(self) -> None:
        """SIGTERM: stop taking work; async jobs (their pollers cannot reconnect) are cut now,
        requests in flight after ``drain_timeout`` seconds (None: never)."""
        if self.draining:
            return
        self.draining = True
        for job, _, _ in self.jobs.values():
            self.stop_job(job, "cut")
        if self.drain_timeout is not None:
            asyncio.get_running_loop().call_later(self.drain_timeout, self._cut_all)

    def _cut_all(self) -> None:
        for job in list(self.inflight.values()):
            self.stop_job(job, "cut")

    def stop_job(self, job: Job, why: str) -> None:
        """Tell a queued or running job to stop (``cancelled`` or ``cut``); counted once."""
        if not job.stop and job.state in ("queued", "running"):
            job.stop = why
            self.metrics.stopped(why)

    async def submit(self, job: Job) -> asyncio.Future:
        self.inflight[job.id] = job
        fut = asyncio.ensure_future(self.batcher.submit(job))
        fut.add_done_callback(lambda _: self.inflight.pop(job.id, None))
        return fut

    async def reap(self) -> None:
        """Cancel async jobs whose page stopped polling; forget old finished ones."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for jid, (job, fut, seen) in list(self.jobs.items()):
                if now - seen > self.job_ttl:
                    self.stop_job(job, "cancelled")
                    if fut.done():
                        del self.jobs[jid]


def create_app(
    translator: Translator,
    *,
    token: str | None = None,
    max_batch: int = 8,
    wait_ms: float = 5.0,
    max_upload_bytes: int = 20 * 2**20,
    drain_timeout: float | None = None,
) -> Any:
    """The ASGI app around a loaded :class:`Translator` (``app.state.server`` holds the state)."""
    srv = Server(translator, max_batch=max_batch, wait_ms=wait_ms, drain_timeout=drain_timeout)

    @asynccontextmanager
    async def lifespan(app: Any):
        srv.batcher.start()
        reaper = asyncio.get_running_loop().create_task(srv.reap())
        yield
        reaper.cancel()
        await srv.batcher.stop()  # uvicorn has let the requests in flight finish

    app = FastAPI(title="condiff", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = srv
    _pages(app, srv)
    _translate(app, srv)
    _jobs(app, srv)
    return Gate(app, srv, token=token, max_bytes=max_upload_bytes)


def _pages(app: Any, srv: Server) -> None:
    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "draining" if srv.draining else "ok"}

    @app.get("/v1/model")
    async def model() -> dict:
        return srv.translator.describe()

    @app.get("/metrics")
    async def metrics() -> Response:
        body, media = srv.metrics.text()
        return PlainTextResponse(body, media_type=media)

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(resources.files("condiff.serve").joinpath("page.html").read_text())

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(FAVICON, media_type="image/svg+xml")


async def _read_job(request: Request, srv: Server) -> Job | JSONResponse:
    """The upload and its options as a checked job, or the 4xx response that says why not."""
    try:
        form = await request.form()
    except Exception as e:  # not multipart, or a broken one
        return _error(400, f"expected a multipart/form-data upload with a field 'image' ({e})")
    upload = form.get("image")
    if upload is None or isinstance(upload, str):
        return _error(422, "the multipart field 'image' (an image file) is required")
    raw = {**request.query_params, **{k: v for k, v in form.items() if k != "image"}}
    raw.pop("token", None)
    t = srv.translator
    try:
        opts = parse_options({k: str(v) for k, v in raw.items()}, t.defaults, t.limits)
        return t.prepare(await upload.read(), opts)
    except ImageTooLarge as e:
        return _error(413, str(e))
    except (OptionError, ImageError) as e:
        return _error(422, str(e))


def upload_schema(srv: Server, accepted: str) -> dict:
    """The OpenAPI description of an upload (the handlers parse the multipart body themselves,
    so FastAPI cannot infer it): the image and every option with this server's limits. Clients
    and fuzzers (schemathesis in the tests) read it from ``/openapi.json``."""
    from condiff.diffusion.samplers import SAMPLERS
    from condiff.serve.engine import ESTIMATES

    lim, d = srv.translator.limits, srv.translator.defaults

    def integer(lo: int, hi: int, default: int) -> dict:
        return {"type": "integer", "minimum": lo, "maximum": hi, "default": default}

    options = {
        "estimate": {"type": "string", "enum": list(ESTIMATES), "default": d.estimate},
        "sampler": {"type": "string", "enum": sorted(SAMPLERS), "default": d.sampler},
        "steps": integer(1, lim.max_steps, d.steps),
        "seed": integer(0, 2**63 - 1, d.seed),
        "num_samples": integer(1, lim.max_samples, d.num_samples),
        "upscale": integer(1, lim.max_upscale, d.upscale),
        "format": {"type": "string", "enum": ["image", "json"], "default": d.format},
    }
    required = ["image"]
    if srv.translator.noise_map:  # a denoiser trained with a noise-level map: its level is due
        options["noise_level"] = {
            "description": "the upload's noise std on the 0-255 scale, or auto (estimated)",
            "oneOf": [
                {"type": "number", "minimum": 0, "maximum": 255},
                {"type": "string", "enum": ["auto"]},
            ],
        }
        required.append("noise_level")
    body = {"type": "object", "required": required,
            "properties": {"image": {"type": "string", "format": "binary"}, **options}}  # fmt: skip
    err = {"description": "refused: `detail` says why"}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": body}}},
        "responses": {
            accepted: {"description": "the estimate (an image, or JSON with `format=json`)"},
            "400": err,
            "401": err,
            "413": err,
            "422": err,
            "499": err,
            "500": {"description": "the model's output held NaN/Inf (damaged weights)"},
            "503": {"description": "the server is draining; retry after `Retry-After`"},
        },
    }


def _translate(app: Any, srv: Server) -> None:
    @app.post("/v1/translate", openapi_extra=upload_schema(srv, "200"))
    async def translate(request: Request) -> Response:
        t0 = time.perf_counter()
        job = await _read_job(request, srv)
        if isinstance(job, Response):
            return job
        fut = await srv.submit(job)
        while not fut.done():  # a client that goes away cancels its job
            await asyncio.wait({fut}, timeout=0.2)
            if not fut.done() and await request.is_disconnected():
                srv.stop_job(job, "cancelled")
                await asyncio.wait({fut})
        stopped = _stopped(fut, job)
        if stopped is not None:
            return stopped
        result = fut.result()
        if job.opts.format == "json" or "application/json" in request.headers.get("accept", ""):
            return JSONResponse(_outputs(job, result, time.perf_counter() - t0))
        data, media = result.file()
        headers = {"X-Condiff-NFE": str(result.nfe)}
        if job.noise_level is not None:  # the level the model was given (estimated for "auto")
            headers["X-Condiff-Noise-Level"] = f"{job.noise_level:.2f}"
        return Response(data, media_type=media, headers=headers)


def _jobs(app: Any, srv: Server) -> None:
    @app.post("/v1/jobs", status_code=202, openapi_extra=upload_schema(srv, "202"))
    async def create(request: Request) -> Response:
        job = await _read_job(request, srv)
        if isinstance(job, Response):
            return job
        srv.jobs[job.id] = (job, await srv.submit(job), time.monotonic())
        return JSONResponse({"id": job.id, "state": job.state}, status_code=202)

    @app.get("/v1/jobs/{jid}")
    async def poll(jid: str) -> Response:
        if jid not in srv.jobs:
            return _error(404, f"no job {jid!r} (finished jobs are kept until fetched)")
        job, fut, _ = srv.jobs[jid]
        srv.jobs[jid] = (job, fut, time.monotonic())
        body: dict[str, Any] = {"id": jid, "state": job.state, "progress": job.progress}
        if fut.done():
            del srv.jobs[jid]
            if job.state == "done":
                body.update(_outputs(job, fut.result(), None))
            elif fut.exception() is not None and job.state == "error":
                body["detail"] = str(fut.exception())
        return JSONResponse(body)

    @app.delete("/v1/jobs/{jid}")
    async def cancel(jid: str) -> Response:
        if jid not in srv.jobs:
            return _error(404, f"no job {jid!r}")
        job = srv.jobs[jid][0]
        srv.stop_job(job, "cancelled")
        return JSONResponse({"id": jid, "state": job.stop or job.state})


def _stopped(fut: asyncio.Future, job: Job) -> Response | None:
    """The answer for a job that did not finish: 503 if a drain cut it, 499 if its client left."""
    exc = fut.exception()
    if exc is None:
        return None
    if isinstance(exc, NonFiniteOutput):  # the model's fault, said plainly; no black image
        return _error(500, str(exc))
    if isinstance(exc, Cancelled) or job.stop:
        if job.stop == "cut":
            return JSONResponse(
                {"detail": "the server is shutting down and stopped this request; retry"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return _error(499, "cancelled: the client went away")
    raise exc


def _outputs(job: Job, result: Any, seconds: float | None) -> dict:
    h, w = job.cond.shape[1:]
    body = {
        "width": w,
        "height": h,
        "nfe": result.nfe,
        "options": job.opts.__dict__,
        "media_type": "image/png",
        "outputs": {k: [base64.b64encode(b).decode() for b in v] for k, v in result.pngs().items()},
    }
    if job.noise_level is not None:  # the level the model was given (estimated for "auto")
        body["noise_level"] = round(job.noise_level, 2)
    if seconds is not None:
        body["seconds"] = seconds
    return body


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
    drain_timeout: float | None = None,
) -> None:
    """Run the server until SIGTERM / Ctrl-C: the requests in flight are finished first (at most
    ``drain_timeout`` seconds; then 503 + Retry-After). A second signal exits at once."""
    import uvicorn

    from condiff.serve.gate import quiet_token_in_access_log

    app = create_app(
        translator,
        token=token,
        max_batch=max_batch,
        wait_ms=wait_ms,
        max_upload_bytes=int(max_upload_mb * 2**20),
        drain_timeout=drain_timeout,
    )
    quiet_token_in_access_log()
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", timeout_graceful_shutdown=None
    )
    draining_server(config, app.srv).run()


def draining_server(config: Any, srv: Server) -> Any:
    """uvicorn's server, telling the app to drain when the first SIGTERM or SIGINT arrives;
    uvicorn then stops accepting and waits for the open requests (no timeout of its own)."""
    import uvicorn

    class Draining(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                asyncio.get_event_loop().call_soon_threadsafe(srv.start_drain)
            super().handle_exit(sig, frame)

    return Draining(config)
