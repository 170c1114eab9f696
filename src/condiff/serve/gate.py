"""The server's front door (pure ASGI, before FastAPI): the bearer token, the upload limit,
refusing new work while draining, and the Prometheus metrics of every request, labelled by
route template (unknown paths fold into "other", so label values stay bounded)."""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import prometheus_client as prom
from fastapi.responses import JSONResponse

OPEN = ("/healthz", "/favicon.ico")  # answered without the token
ROUTES = ("/", "/favicon.ico", "/healthz", "/metrics", "/v1/model", "/v1/translate", "/v1/jobs")
NEW_WORK = ("/v1/translate", "/v1/jobs")


def route_of(path: str) -> str:
    """The route template a path belongs to ("other" for anything unknown)."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/jobs/") and path.count("/") == 3:
        return "/v1/jobs/{id}"
    return "other"


class Metrics:
    """Prometheus series of one server: requests, latency, batches, queue depth, stopped jobs."""

    def __init__(self) -> None:
        r = self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "condiff_requests", "HTTP requests", ["route", "status"], registry=r
        )
        self.latency = prom.Histogram(
            "condiff_request_seconds",
            "request latency",
            ["route"],
            buckets=(0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100),
            registry=r,
        )
        self.batch_size = prom.Histogram(
            "condiff_batch_size", "jobs per network batch", buckets=(1, 2, 4, 8, 16, 32), registry=r
        )
        self.batch_seconds = prom.Histogram(
            "condiff_batch_seconds", "seconds per batch", registry=r
        )
        self.jobs_stopped = prom.Counter(
            "condiff_jobs_stopped",
            "jobs stopped before their end: cancelled (the client went "
            "away or asked) or cut (the server drained)",
            ["reason"],
            registry=r,
        )

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def stopped(self, reason: str) -> None:
        self.jobs_stopped.labels(reason).inc()

    def queue_depth(self, fn: Callable[[], float]) -> None:
        prom.Gauge(
            "condiff_queue_depth", "jobs waiting or running", registry=self.registry
        ).set_function(fn)

    def text(self) -> tuple[bytes, str]:
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST


class Gate:
    """ASGI middleware around the app: token, upload limit (413 before parsing, by
    Content-Length and by counting chunked bodies), 503 for new work while draining, metrics."""

    def __init__(self, app: Any, srv: Any, *, token: str | None, max_bytes: int) -> None:
        self.app, self.srv, self.token, self.max_bytes = app, srv, token, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan
            return await self.app(scope, receive, send)
        route, t0, status = route_of(scope["path"]), time.perf_counter(), [500]

        async def send_status(msg: dict) -> None:
            if msg["type"] == "http.response.start":
                status[0] = msg["status"]
            await send(msg)

        try:
            refusal = self._refusal(scope, route)
            if refusal is None:
                body = await self._read_body(scope, receive)
                if body is None:
                    refusal = _json(
                        413,
                        f"upload larger than the limit of "
                        f"{self.max_bytes / 2**20:.1f} MiB (--max-upload-mb)",
                    )
                else:
                    return await self.app(scope, _replay(body, receive), send_status)
            await refusal(scope, receive, send_status)
        finally:
            self.srv.metrics.request(route, status[0], time.perf_counter() - t0)

    def _refusal(self, scope: dict, route: str) -> JSONResponse | None:
        if self.token and route not in OPEN:
            headers = dict(scope.get("headers") or [])
            given = headers.get(b"authorization", b"").decode(errors="replace")
            given = given[7:] if given.lower().startswith("bearer ") else ""
            query = scope.get("query_string", b"").decode(errors="replace")
            given = given or _query_value(query, "token")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return _json(401, "a bearer token is required (Authorization: Bearer TOKEN)")
        if self.srv.draining and route in NEW_WORK:
            return _json(503, "the server is shutting down; retry", {"Retry-After": "5"})
        return None

    async def _read_body(self, scope: dict, receive: Any) -> bytes | None:
        """The whole request body, or None once it exceeds the limit."""
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return None
        chunks, total, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            total += len(msg.get("body", b""))
            if total > self.max_bytes:
                return None
            chunks.append(msg.get("body", b""))
            more = msg.get("more_body", False)
        return b"".join(chunks)


def _replay(body: bytes, receive: Any) -> Callable:
    """A ``receive`` that gives the read body once, then the client's own messages
    (``http.disconnect`` when it goes away)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _json(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _query_value(query: str, name: str) -> str:
    from urllib.parse import parse_qs

    return (parse_qs(query).get(name) or [""])[0]


class _RedactToken(logging.Filter):
    """Access-log lines show ``token=***`` instead of a token passed in the URL (the page)."""

    PATTERN = re.compile(r"(token=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        return True


def quiet_token_in_access_log() -> None:
    logging.getLogger("uvicorn.access").addFilter(_RedactToken())
