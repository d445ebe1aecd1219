"""A model loaded lazily on one worker thread of its own, with its requests micro-batched.

Every call (loading, then each batch) runs on the worker thread, never on the event loop, and one
at a time (tokenizers and llama.cpp contexts are not thread-safe). A request that arrives while a
batch runs waits; every request waiting when that batch ends goes into the next one (up to
`max_items` items), so many concurrent requests cost a few model calls instead of one each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from homeport.errors import EngineError, HomeportError, ServiceUnavailableError

log = logging.getLogger(__name__)

M = TypeVar("M")  # the model
I = TypeVar("I")  # one input item
R = TypeVar("R")  # one item's result


@dataclass
class _Job(Generic[I]):
    items: list[I]
    future: asyncio.Future


class MicroBatcher(Generic[M, I, R]):
    def __init__(self, load: Callable[[], M], run: Callable[[M, list[I]], list[R]], *, what: str,
                 max_items: int = 256) -> None:
        """`load` builds the model (blocking, slow; may raise a HomeportError such as a 503): on
        first use, and again after a failure. `run` computes one result per item, in order.
        `what` names the model in errors ("embedding model")."""
        self._load = load
        self._run = run
        self._what = what
        self._max_items = max_items
        self._model: M | None = None
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"homeport-{what.replace(' ', '-')}")
        self._pending: deque[_Job[I]] = deque()
        self._worker: asyncio.Task | None = None
        self.batches = 0
        self.items = 0

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def model(self) -> M:
        """The model, loaded on first use in the worker thread."""
        if self._model is None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._load_once)
        assert self._model is not None
        return self._model

    async def submit(self, items: Sequence[I]) -> list[R]:
        """The items' results, computed in the next batch."""
        await self.model()
        if not items:
            return []
        loop = asyncio.get_running_loop()
        job = _Job(list(items), loop.create_future())
        self._pending.append(job)
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._worker = loop.create_task(self._drain(), name=f"homeport-{self._what}-batches")
        return await job.future

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _load_once(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            try:
                self._model = self._load()
            except HomeportError:
                raise
            except Exception as exc:
                log.error("%s failed to load: %s", self._what, type(exc).__name__)
                raise ServiceUnavailableError(f"The {self._what} could not be loaded.") from None

    def _next_batch(self) -> list[_Job[I]]:
        batch = [self._pending.popleft()]
        size = len(batch[0].items)
        while self._pending and size + len(self._pending[0].items) <= self._max_items:
            job = self._pending.popleft()
            batch.append(job)
            size += len(job.items)
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = [job for job in self._next_batch() if not job.future.done()]  # skip cancelled ones
            if not batch:
                continue
            items = [item for job in batch for item in job.items]
            try:
                results = await loop.run_in_executor(self._executor, self._run_batch, items)
            except Exception as exc:  # every waiting request of the batch gets the error
                error = exc if isinstance(exc, HomeportError) else self._engine_error(exc)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.batches += 1
            self.items += len(items)
            start = 0
            for job in batch:
                end = start + len(job.items)
                if not job.future.done():
                    job.future.set_result(results[start:end])
                start = end

    def _run_batch(self, items: list[I]) -> list[R]:
        """In the worker thread."""
        assert self._model is not None
        results = self._run(self._model, items)
        if len(results) != len(items):
            raise EngineError(f"The {self._what} returned the wrong number of results.")
        return results

    def _engine_error(self, exc: BaseException) -> EngineError:
        log.error("%s failed: %s", self._what, type(exc).__name__)  # never the text: it may be private
        return EngineError(f"The {self._what} failed on this input.")
