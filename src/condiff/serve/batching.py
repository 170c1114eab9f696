"""Micro-batching: concurrent requests of the same shape and options share network calls.

One worker task takes the first waiting job, then gathers jobs with the same key for up to
``wait_s`` or until ``max_batch``, and runs them as one batch on a single worker thread (one
pipeline, one batch at a time). Jobs with other keys wait for the next round, in order. A job
told to stop (``job.stop``: its client went away, or the server is draining) is dropped from the
queue; a running batch stops at its next network call once all its jobs are told to stop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from condiff.infer.progress import Cancelled

Item = tuple[Any, asyncio.Future]  # (job, the future its request awaits)


class MicroBatcher:
    def __init__(
        self,
        run_batch: Callable[[list[Any]], list[Any]],
        *,
        max_batch: int = 8,
        wait_s: float = 0.005,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run_batch, self.max_batch, self.wait_s = run_batch, max(1, max_batch), wait_s
        self.on_batch = on_batch  # (batch size, seconds) after each batch, for metrics
        self.queue: asyncio.Queue[Item] = asyncio.Queue()
        self.pending: collections.deque[Item] = collections.deque()
        self.running = 0  # jobs in the batch being computed
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="condiff-batch")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        """Jobs waiting or running."""
        return self.queue.qsize() + len(self.pending) + self.running

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.executor.shutdown(wait=True)

    async def submit(self, job: Any) -> Any:
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((job, fut))
        return await fut

    async def _next(self, timeout: float | None) -> Item | None:
        if self.pending:
            return self.pending.popleft()
        return await self._get(timeout)

    async def _get(self, timeout: float | None) -> Item | None:
        """``queue.get()`` with a timeout that never loses an item: ``asyncio.wait_for`` in
        Python 3.11 can drop one that arrives just as the timeout fires (its request would
        then wait forever; found by fuzzing the server)."""
        if timeout is None:
            return await self.queue.get()
        task = asyncio.ensure_future(self.queue.get())
        done, _ = await asyncio.wait({task}, timeout=max(timeout, 0.0))
        if not done:
            task.cancel()
            await asyncio.wait({task})
        return None if task.cancelled() else task.result()

    async def _work(self) -> None:
        """The worker loop. It must never die: a dead worker would leave every later request
        waiting forever. A failure outside a batch's run fails that batch, is logged, and the
        loop goes on."""
        while True:
            batch: list[Item] = []
            try:
                await self._one(batch)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # pragma: no cover - a bug; logged, the server goes on
                logging.getLogger("uvicorn.error").exception("condiff: batch worker error")
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)

    async def _one(self, batch: list[Item]) -> None:
        """Gather one batch (into ``batch``, so the loop can fail it) and run it."""
        loop = asyncio.get_running_loop()
        first = await self._next(None)
        assert first is not None
        batch.append(first)
        key = first[0].key
        # jobs already waiting with the same key join at once; then wait a little for more
        for item in list(self.pending):
            if len(batch) < self.max_batch and item[0].key == key:
                self.pending.remove(item)
                batch.append(item)
        deadline = loop.time() + self.wait_s
        while len(batch) < self.max_batch:
            left = deadline - loop.time()
            if left <= 0:
                break
            item = await self._get(left)
            if item is None:
                break
            (batch if item[0].key == key else self.pending).append(item)
        batch[:] = self._drop_stopped(batch)
        if not batch:
            return
        await self._run(loop, batch)

    def _drop_stopped(self, batch: list[Item]) -> list[Item]:
        """Jobs whose clients went away (or that a drain cut) never reach the network."""
        keep = []
        for job, fut in batch:
            if fut.cancelled() or getattr(job, "stopped", False):
                job.state = getattr(job, "stop", "") or "cancelled"
                if not fut.done():
                    fut.set_exception(Cancelled(job.state))
            else:
                keep.append((job, fut))
        return keep

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[Item]) -> None:
        self.running = len(batch)
        for job, _ in batch:
            job.state = "running"
        t0 = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self.executor, self.run_batch, [job for job, _ in batch]
            )
        except Exception as e:  # the batch's requests all get the error (Cancelled included)
            for job, fut in batch:
                job.state = (job.stop or "cancelled") if isinstance(e, Cancelled) else "error"
                if not fut.done():
                    fut.set_exception(e)
        else:
            for (job, fut), res in zip(batch, results, strict=True):
                job.state = job.stop or "done"
                if not fut.done():
                    fut.set_result(res)
        finally:
            self.running = 0
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - t0)
