"""Opportunistic batching: requests that arrive while the model is busy share a call.

BentoML's own adaptive batching (`@bentoml.api(batchable=True)`) was not used:
it answers HTTP 503 when its latency estimate exceeds `max_latency_ms` (a
plain batchable endpoint did so under 16 concurrent clients on this 2-core
machine), a batchable API takes a single array, so the per-request checks
would have to run on the merged batch (one bad request would fail the whole
batch), and it waits for a batch window even when the model is idle.

`MicroBatcher` never waits and never refuses: when the model is idle a
request runs at once (batch of one, no added latency); while it runs, new
requests queue, and the next call takes everything queued (up to
`max_batch` images). The batch size therefore follows the load. The model runs
in one dedicated thread so the event loop keeps parsing requests meanwhile.
"""

import asyncio
import collections
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class MicroBatcher:
    """Run `fn(batch) -> tuple of arrays` on concurrent requests, merged.

    `await batcher(x)` with `x` shaped `(n, ...)` returns `fn`'s outputs for
    those `n` rows. `fn` runs in a single worker thread, one call at a time.
    `observe(images)`, when given, is called with the size of every call.
    """

    def __init__(self, fn, max_batch=256, observe=None):
        self._fn = fn
        self.max_batch = int(max_batch)
        #: Called with the images of every model call (the `/metrics` histogram).
        self._observe = observe
        self._pending = collections.deque()
        self._draining = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="softvq-model")
        #: Images per model call, for the benchmark and the tests.
        self.batch_sizes = collections.Counter()

    async def __call__(self, x):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((x, future))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await future

    def _take(self):
        items = [self._pending.popleft()]
        size = len(items[0][0])
        while self._pending and size + len(self._pending[0][0]) <= self.max_batch:
            items.append(self._pending.popleft())
            size += len(items[-1][0])
        return items, size

    async def _drain(self):
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                items, size = self._take()
                self.batch_sizes[size] += 1
                if self._observe is not None:
                    self._observe(size)
                try:
                    batch = items[0][0] if len(items) == 1 else np.concatenate([x for x, _ in items])
                    outputs = await loop.run_in_executor(self._executor, self._fn, batch)
                except Exception as error:  # noqa: BLE001 - handed to every waiter
                    for _, future in items:
                        if not future.done():
                            future.set_exception(error)
                    continue
                start = 0
                for x, future in items:
                    if not future.done():  # a waiter may have been cancelled
                        future.set_result(tuple(o[start:start + len(x)] for o in outputs))
                    start += len(x)
        finally:
            self._draining = False

    def close(self):
        """Stop the worker thread (after the running call finishes)."""
        self._executor.shutdown(wait=True)
