"""Graceful shutdown: count requests in flight, refuse new ones while draining, and at the
deadline cut what still runs so that streams end with an error frame instead of a dropped socket.

`server.py` drives it (`Drain.run`) when SIGTERM or Ctrl-C arrives; `DrainMiddleware` counts and
refuses; `api/streaming.py` asks `current_drain()` whether a stream or a non-streaming wait was
cut for shutdown. A contextvar carries the drain to the streaming code, which gets no request.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator
from typing import TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from homeport.api.errors import error_response
from homeport.errors import ServiceUnavailableError

log = logging.getLogger("homeport")
T = TypeVar("T")

SHUTTING_DOWN = ServiceUnavailableError(
    "The server is shutting down and takes no new requests.",
    code="shutting_down",
    headers={"Retry-After": "5", "Connection": "close"},
)


def server_shutdown_error() -> ServiceUnavailableError:
    """What a request cut at the shutdown deadline gets: a 503 body, or a stream's last frame."""
    return ServiceUnavailableError("The server shut down before this request finished.", code="server_shutdown")


# After the deadline, how long the cut requests get to send their error and end.
_CUT_GRACE_S = 5.0

_current: contextvars.ContextVar[Drain | None] = contextvars.ContextVar("homeport_drain", default=None)


def current_drain() -> Drain | None:
    """The drain of the request being served (None outside DrainMiddleware, e.g. direct calls)."""
    return _current.get()


class StreamHandle:
    """One SSE stream in flight. `waiting` is true while it awaits its next chunk: only then may
    the drain cancel its task, so the cancellation lands in the generation (which stops it, as a
    disconnect does) and never inside uvicorn's send."""

    def __init__(self, drain: Drain | None) -> None:
        self.drain = drain
        self.task = asyncio.current_task()
        self.waiting = False
        self.cut = drain is not None and drain.deadline.is_set()  # a stream starting too late
        if drain is not None:
            drain.streams.add(self)

    def cut_for_shutdown(self) -> None:
        self.cut = True
        if self.waiting and self.task is not None:
            self.task.cancel()

    async def next(self, items: AsyncIterator[T]) -> T | _End:
        """The next item, or END when the stream has no more or was cut; only while awaiting it
        may the drain cancel the task."""
        if self.cut:
            return END
        self.waiting = True
        try:
            return await anext(items)
        except StopAsyncIteration:
            return END
        finally:
            self.waiting = False

    def took_back_cancel(self) -> bool:
        """For a CancelledError from `next`: true when the drain sent it (the stream was cut; the
        cancellation is taken back, the client is still there and is told why), false when the
        client went away (re-raise it)."""
        if not self.cut:
            return False
        if (task := asyncio.current_task()) is not None:
            task.uncancel()
        return True

    def close(self) -> None:
        if self.drain is not None:
            self.drain.streams.discard(self)


class _End:
    pass


END = _End()  # what StreamHandle.next returns at the end of a stream (an item may be None)


class Drain:
    def __init__(self) -> None:
        self.active = 0
        self.draining = False
        self.deadline = asyncio.Event()  # set when the time to finish is up
        self.streams: set[StreamHandle] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.active += 1
        self._idle.clear()

    def leave(self) -> None:
        self.active -= 1
        if self.active <= 0:
            self._idle.set()

    async def run(self, timeout: float) -> int:
        """Refuse new requests, give running ones `timeout` seconds, then cut the rest; returns
        how many were cut."""
        self.draining = True
        if self.active:
            log.info("shutting down: %d running request(s) get up to %gs to finish", self.active, timeout)
        else:
            log.info("shutting down")
        if await self._wait_idle(timeout):
            return 0
        cut = self.active
        log.warning("shutting down: cutting %d request(s) still running after %gs", cut, timeout)
        self.deadline.set()
        for stream in list(self.streams):
            stream.cut_for_shutdown()
        await self._wait_idle(_CUT_GRACE_S)
        return cut

    async def _wait_idle(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class DrainMiddleware:
    """Counts every HTTP request until its response body is complete (streams included), and
    answers 503 to new ones once the drain began, also on keep-alive connections already open."""

    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await error_response(SHUTTING_DOWN)(scope, receive, send)
            return
        self.drain.enter()
        token = _current.set(self.drain)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)
            self.drain.leave()
