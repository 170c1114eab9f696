"""A bounded load test of ``condiff serve`` (``condiff bench --serve``).

Starts the server as a real process on a free localhost port, once with micro-batching and once
without, fires ``requests`` uploads from ``clients`` concurrent clients, and checks that every
response arrived (no error, nothing lost) and equals ``condiff sample``'s output for the same
image and seed. Prints p50 / p99 latency and throughput side by side.
"""

from __future__ import annotations

import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """A ``condiff serve`` process; what it prints goes to a log file (never an unread pipe,
    which fills after a few thousand access-log lines and stalls the server)."""

    proc: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(args: list[str], *, timeout: float = 120.0) -> tuple[ServerProcess, str]:
    """``condiff serve ARGS --port P`` in its own process; returns it once /healthz answers."""
    import httpx

    port = free_port()
    log = Path(tempfile.mkstemp(prefix="condiff-serve-", suffix=".log")[1])
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "condiff.cli", "serve", *args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"condiff serve exited: {server.output()}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return server, server.url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"condiff serve did not answer /healthz in time: {server.output()}")


def stop_server(server: ServerProcess, timeout: float = 60.0) -> tuple[int, str]:
    """SIGTERM (requests in flight finish), then the exit status and what it printed."""
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    out = server.output()
    server.log.unlink(missing_ok=True)
    return server.proc.returncode, out


def default_images(folder: str | None) -> list[Path]:
    """The load test's uploads: a folder's images, or two bundled photographs cut to 64 px."""
    from condiff.data import export_bundled, list_images, read_image, write_image

    if folder:
        return list_images(folder)
    tmp = Path(tempfile.mkdtemp(prefix="condiff-load-"))
    out = []
    for p in export_bundled(tmp / "all", "gray")[:2]:
        x, _ = read_image(p)
        out.append(write_image(tmp / p.name, x[:64, :64]))
    return out


def cli_outputs(checkpoint: str, cases: list[tuple[Path, int]], options: list[str]) -> dict:
    """``condiff sample`` of each (image, seed): the reference every response must equal."""
    from PIL import Image

    ref = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (img, seed) in enumerate(cases):
            out = Path(tmp) / str(k)
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "condiff.cli",
                    "sample",
                    "--checkpoint",
                    checkpoint,
                    "--input",
                    str(img),
                    "--output",
                    str(out),
                    "--seed",
                    str(seed),
                    "--no-progress",
                    *options,
                ],
                check=True,
                capture_output=True,
            )
            ref[(img, seed)] = np.asarray(Image.open(out / f"{img.stem}.png"))
    return ref


@dataclass
class LoadResult:
    mode: str
    requests: int
    clients: int
    errors: int
    mismatches: int
    max_diff: int  # largest |response - CLI| over all pixels of all responses, in 8-bit levels
    p50_ms: float
    p99_ms: float
    per_s: float
    mean_batch: float
    warmup: int  # untimed requests first (compilation, CUDA graph capture)
    warmup_s: float


async def _fire(
    url: str, jobs: list[tuple[Path, int]], clients: int, fields: dict, token: str | None
) -> tuple[list[tuple[int, bytes, float]], float]:
    import httpx

    sem = asyncio.Semaphore(clients)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = {p: p.read_bytes() for p in {p for p, _ in jobs}}

    async with httpx.AsyncClient(timeout=600, headers=headers) as client:

        async def one(img: Path, seed: int):
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(
                    f"{url}/v1/translate",
                    files={"image": (img.name, data[img], "image/png")},
                    # as `condiff sample` runs by default, whose outputs it is checked against
                    data={"estimate": "sample", "upscale": "1", **fields, "seed": str(seed)},
                )
                return r.status_code, r.content, time.perf_counter() - t0

        t0 = time.perf_counter()
        res = await asyncio.gather(*(one(p, s) for p, s in jobs))
        return res, time.perf_counter() - t0


def _pixels(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)))


def _batch_counts(metrics_text: str) -> tuple[float, float]:
    """(requests batched, network batches) so far, from the server's Prometheus text."""
    vals = {}
    for line in metrics_text.splitlines():
        for key in ("condiff_batch_size_sum", "condiff_batch_size_count"):
            if line.startswith(key + " "):
                vals[key] = float(line.split()[1])
    return vals.get("condiff_batch_size_sum", 0.0), vals.get("condiff_batch_size_count", 0.0)


def load_test(
    checkpoint: str,
    images: list[Path],
    *,
    requests: int = 200,
    clients: int = 16,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    options: dict | None = None,
    modes: tuple[str, ...] = ("batching", "no batching"),
    server_args: list[str] | None = None,
    cli_args: list[str] | None = None,
    warmup: int | None = None,
) -> list[LoadResult]:
    """Run the load test in each mode; every response is compared with the CLI's output.

    Each server first gets ``warmup`` untimed requests (default ``2 * clients``) from the same
    clients: the one-off work a first request of a new shape or batch size pays (compilation,
    CUDA graph capture) is reported as warm-up time, not folded into the latencies. Warm-up
    responses are checked like the timed ones (errors, equality with the CLI).
    """
    import httpx

    fields = {"estimate": "sample", **(options or {})}
    cli_opts = [f"--{k.replace('_', '-')}={v}" for k, v in fields.items()]
    cases = [(img, s) for img in images for s in seeds]
    ref = cli_outputs(checkpoint, cases, [*cli_opts, *(cli_args or [])])
    warmup = 2 * clients if warmup is None else warmup
    warm = [cases[i % len(cases)] for i in range(warmup)]
    jobs = [cases[i % len(cases)] for i in range(requests)]
    token = os.environ.get("CONDIFF_TOKEN")
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    rows = []
    for mode in modes:
        extra = ["--no-batching"] if mode == "no batching" else []
        proc, url = start_server(["--checkpoint", checkpoint, *extra, *(server_args or [])])
        try:
            wres, wwall = asyncio.run(_fire(url, warm, clients, fields, token)) if warm else ([], 0)
            before = _batch_counts(httpx.get(f"{url}/metrics", headers=auth).text)
            res, wall = asyncio.run(_fire(url, jobs, clients, fields, token))
            after = _batch_counts(httpx.get(f"{url}/metrics", headers=auth).text)
        finally:
            stop_server(proc)
        lat = np.array([r[2] for r in res]) * 1000
        every = list(zip([*wres, *res], [*warm, *jobs], strict=True))
        errors = sum(r[0] != 200 for r, _ in every)
        diffs = [
            int(np.abs(_pixels(r[1]).astype(np.int32) - ref[j].astype(np.int32)).max())
            for r, j in every
            if r[0] == 200
        ]
        batches = after[1] - before[1]
        rows.append(
            LoadResult(
                mode,
                requests,
                clients,
                errors,
                sum(d > 0 for d in diffs),
                max(diffs, default=0),
                float(np.percentile(lat, 50)),
                float(np.percentile(lat, 99)),
                requests / wall,
                (after[0] - before[0]) / batches if batches else float("nan"),
                warmup,
                wwall,
            )
        )
    return rows


def format_rows(rows: list[LoadResult]) -> str:
    hdr = (
        f"{'mode':<13}{'requests':>9}{'clients':>8}{'errors':>7}{'!=CLI':>7}{'max|d|':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'req/s':>8}{'batch':>7}{'warm-up':>14}"
    )
    lines = [hdr, "-" * len(hdr)]
    for r in rows:
        warm = f"{r.warmup} in {r.warmup_s:.1f} s"
        lines.append(
            f"{r.mode:<13}{r.requests:>9}{r.clients:>8}{r.errors:>7}{r.mismatches:>7}"
            f"{r.max_diff:>7}{r.p50_ms:>9.0f}{r.p99_ms:>9.0f}{r.per_s:>8.2f}{r.mean_batch:>7.2f}"
            f"{warm:>14}"
        )
    return "\n".join(lines)
