"""One thread that owns a model, and the inbox through which work reaches it.

Everything that touches the model (a llama.cpp context, a torch module, an embedder) runs on this
thread, never on the event loop, and one thing at a time: none of them is thread-safe. Work comes
as jobs, answered with `Job.send` on the event loop that submitted them, or as calls
(`call_in_thread`), answered through a future. The loop blocks only when it has nothing to do.

A subclass says what running means: which waiting jobs to drop (`withdraw`), how many run at once
(`has_room`), how a job starts (`admit`, `started`) and how the running ones advance (`work`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from homeport.errors import EngineError

STOP_THREAD = object()  # put in the inbox to end the thread


@dataclass(eq=False, kw_only=True)
class Job:
    """Work submitted from an event loop (create it on that loop). The loop side sets `cancelled`
    when nobody waits for the answer any more; the thread then drops the job."""

    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def send(self, item: object) -> None:
        """From the thread: hand `item` (a result, or an exception to raise) to the job's loop."""
        self.loop.call_soon_threadsafe(self.deliver, item)

    def deliver(self, item: object) -> None:  # on the event loop
        raise NotImplementedError


J = TypeVar("J", bound=Job)


@dataclass(eq=False)
class _Call:
    """A function to run on the thread (see `Worker.call_in_thread`)."""

    fn: Callable[[], object]
    exclusive: bool
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return  # the caller gave up before it ran
        try:
            self.future.set_result(self.fn())
        except BaseException as exc:
            self.future.set_exception(exc)

    def fail(self, error: Exception) -> None:
        if self.future.set_running_or_notify_cancel():
            self.future.set_exception(error)


class Worker(Generic[J]):
    closed_message = "the model was unloaded"  # what jobs and calls get when the thread ends under them

    def __init__(self, name: str) -> None:
        self.name = name  # the thread's name
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Asks the thread to end, without waiting: it fails what it still holds."""
        if self._thread is not None:
            self._thread = None
            self.inbox.put(STOP_THREAD)

    async def aclose(self) -> None:
        """Ends the thread, waits for it, and fails what it never took from the inbox."""
        thread = self._thread
        self.close()
        if thread is not None:
            await asyncio.to_thread(thread.join)
        while True:
            try:
                item = self.inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Call):
                item.fail(EngineError(self.closed_message))
            elif isinstance(item, Job):
                item.send(EngineError(self.closed_message))

    def wake(self) -> None:
        """Makes an idle thread look at the jobs' flags again."""
        self.inbox.put(None)

    def call_in_thread(self, fn: Callable[[], object], *, exclusive: bool = False) -> concurrent.futures.Future:
        """Runs `fn()` on the thread between two steps; the future has its result. `exclusive`:
        first let every running job finish, admitting no new one meanwhile (they wait and start
        after `fn`), for changes such as new weights that no generation may straddle."""
        call = _Call(fn, exclusive)
        self.inbox.put(call)
        return call.future

    # ---- what a subclass defines (all on the thread) -------------------------------------------

    def thread_context(self) -> contextlib.AbstractContextManager:
        """Entered on the thread around its whole loop (e.g. torch's inference mode)."""
        return contextlib.nullcontext()

    def withdraw(self, waiting: list[J]) -> None:
        """Removes the waiting jobs that should not start any more."""
        waiting[:] = [job for job in waiting if not job.cancelled.is_set()]

    def has_room(self, running: list[J], job: J) -> bool:
        raise NotImplementedError

    def admit(self, job: J) -> None:
        """Prepares a job to run; raising refuses it (`reject`)."""

    def started(self, job: J) -> None:
        """`job` was admitted and runs from now on."""

    def reject(self, job: J, exc: Exception) -> None:
        job.send(exc if isinstance(exc, EngineError) else EngineError("the job could not start"))

    def work(self, running: list[J]) -> None:
        """Advances the running jobs once; those it ends it removes from `running`."""
        raise NotImplementedError

    def crash(self, running: list[J], exc: Exception) -> None:
        """`work` raised: the running jobs cannot go on."""
        raise NotImplementedError

    def abandon(self, jobs: list[J]) -> None:
        """The thread is ending under these jobs."""
        for job in jobs:
            job.send(EngineError(self.closed_message))

    # ---- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        with self.thread_context():
            self._loop()

    def _loop(self) -> None:
        running: list[J] = []
        waiting: list[J] = []
        calls: list[_Call] = []
        while True:
            # Block only when there is nothing to run or call; otherwise just drain the inbox.
            block = not running and not waiting and not calls
            try:
                while True:
                    item = self.inbox.get(block=block)
                    block = False
                    if item is None:  # a wake-up call: look at the flags again
                        continue
                    if item is STOP_THREAD:
                        self.abandon(running + waiting)
                        for call in calls:
                            call.fail(EngineError(self.closed_message))
                        return
                    (calls if isinstance(item, _Call) else waiting).append(item)
            except queue.Empty:
                pass
            self.withdraw(waiting)
            # Calls run in order; an exclusive one waits for an empty batch and holds back the
            # calls and the admissions behind it until it has run.
            while calls and not (calls[0].exclusive and running):
                calls.pop(0).run()
            while waiting and not calls and self.has_room(running, waiting[0]):
                job = waiting.pop(0)
                try:
                    self.admit(job)
                except Exception as exc:  # this job only
                    self.reject(job, exc)
                    continue
                running.append(job)
                self.started(job)
            if running:
                try:
                    self.work(running)
                except Exception as exc:  # never let the thread die silently
                    self.crash(running, exc)
