"""Batching of concurrent embedding requests without adding latency.

Requests queue up while the engine is busy; when it frees, everything queued (up to
``max_batch`` chips) goes in one engine call. A lone request never waits for company.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from candor_faces.engines import EmbeddingEngine
from candor_kit.tasks import cancel_and_wait


class EmbeddingBatcher:
    """Serialises engine calls on one worker thread and merges the requests that queue up."""

    def __init__(self, engine: EmbeddingEngine, max_batch: int = 32) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._queue: asyncio.Queue[tuple[Sequence[np.ndarray], asyncio.Future[np.ndarray]]] = asyncio.Queue()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedder")
        self._task: asyncio.Task[None] | None = None
        self.batches_run = 0

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def embed(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        """Embed chips, possibly together with other callers' chips."""
        if not chips:
            return np.zeros((0, self._engine.model.dimension), dtype=np.float32)
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((chips, future))
        return await future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pending = [await self._queue.get()]
            size = len(pending[0][0])
            while not self._queue.empty() and size < self._max_batch:
                item = self._queue.get_nowait()
                pending.append(item)
                size += len(item[0])
            chips = [chip for request_chips, _ in pending for chip in request_chips]
            try:
                vectors = await loop.run_in_executor(self._worker, self._engine.embed, chips)
            except Exception as exc:  # noqa: BLE001 - hand the failure to every waiting caller
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches_run += 1
            start = 0
            for request_chips, future in pending:
                end = start + len(request_chips)
                if not future.done():
                    future.set_result(vectors[start:end])
                start = end

    async def close(self) -> None:
        """Stop the loop and the worker thread."""
        await cancel_and_wait(self._task)
        self._worker.shutdown(wait=True, cancel_futures=True)
