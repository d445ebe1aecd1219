"""A model loaded lazily on a `Worker` thread of its own, with its requests micro-batched.

Every call (loading, then each batch) runs on the thread, never on the event loop, and one at a
time (tokenizers and llama.cpp contexts are not thread-safe). A request that arrives while a batch
runs waits; every request waiting when that batch ends goes into the next one (up to `max_items`
items), so many concurrent requests cost a few model calls instead of one each.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from homeport.engines.runtime.worker import Job, Worker
from homeport.errors import EngineError, HomeportError, ServiceUnavailableError

log = logging.getLogger(__name__)

M = TypeVar("M")  # the model
I = TypeVar("I")  # one input item
R = TypeVar("R")  # one item's result


@dataclass(eq=False, kw_only=True)
class _BatchJob(Job):
    items: list
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    batched: bool = False  # taken into a batch (no longer queued)

    def deliver(self, item: object) -> None:
        if self.future.done():  # the caller gave up
            return
        if isinstance(item, BaseException):
            self.future.set_exception(item)
        else:
            self.future.set_result(item)


class MicroBatcher(Worker[_BatchJob], Generic[M, I, R]):
    def __init__(self, load: Callable[[], M], run: Callable[[M, list[I]], list[R]], *, what: str,
                 max_items: int = 256) -> None:
        """`load` builds the model (blocking, slow; may raise a HomeportError such as a 503): on
        first use, and again after a failure. `run` computes one result per item, in order.
        `what` names the model in errors ("embedding model")."""
        super().__init__(f"homeport-{what.replace(' ', '-')}")
        self.closed_message = f"The {what} was closed."
        self._load = load
        self._run_items = run
        self._what = what
        self._max_items = max_items
        self._model: M | None = None
        self._start_lock = threading.Lock()  # the thread starts on first use, from any event loop
        self._closed = False
        self._live: set[_BatchJob] = set()
        self.batches = 0
        self.items = 0

    @property
    def queued(self) -> int:
        return sum(1 for job in list(self._live) if not job.batched)

    async def model(self) -> M:
        """The model, loaded on first use in the worker thread."""
        if self._model is None:
            self._ensure_thread()
            await asyncio.wrap_future(self.call_in_thread(self._load_once))
        assert self._model is not None
        return self._model

    async def submit(self, items: Sequence[I]) -> list[R]:
        """The items' results, computed in the next batch."""
        await self.model()
        if not items:
            return []
        self._ensure_thread()
        job = _BatchJob(items=list(items))
        self._live.add(job)
        self.inbox.put(job)
        try:
            return await job.future
        finally:
            job.cancelled.set()  # if it still waits, it never runs
            self._live.discard(job)

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._closed:
                raise EngineError(self.closed_message)
            if not self.running:
                self.start()

    def close(self) -> None:
        """Ends the thread without waiting for a batch that runs; later calls are refused."""
        with self._start_lock:
            self._closed = True
            super().close()

    # ---- the thread ----------------------------------------------------------------------------

    def _load_once(self) -> None:
        if self._model is not None:
            return
        try:
            self._model = self._load()
        except HomeportError:
            raise
        except Exception as exc:
            log.error("%s failed to load: %s", self._what, type(exc).__name__)
            raise ServiceUnavailableError(f"The {self._what} could not be loaded.") from None

    def has_room(self, running: list[_BatchJob], job: _BatchJob) -> bool:
        # A request bigger than the cap still runs, alone.
        return not running or sum(len(j.items) for j in running) + len(job.items) <= self._max_items

    def admit(self, job: _BatchJob) -> None:
        job.batched = True

    def work(self, running: list[_BatchJob]) -> None:
        items = [item for job in running for item in job.items]
        results = self._run_items(self._model, items)
        if len(results) != len(items):
            raise EngineError(f"The {self._what} returned the wrong number of results.")
        self.batches += 1
        self.items += len(items)
        start = 0
        for job in running:
            end = start + len(job.items)
            job.send(results[start:end])
            start = end
        running.clear()

    def crash(self, running: list[_BatchJob], exc: Exception) -> None:
        """Every request of the batch gets the error."""
        if not isinstance(exc, HomeportError):
            log.error("%s failed: %s", self._what, type(exc).__name__)  # never the text: it may be private
            exc = EngineError(f"The {self._what} failed on this input.")
        for job in running:
            job.send(exc)
        running.clear()
