"""Responses for a service's result: SSE frames for streams, JSON otherwise; and cancellation
of a non-streaming generation when its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from homeport.api.drain import StreamHandle, current_drain, server_shutdown_error
from homeport.api.errors import INTERNAL_ERROR
from homeport.errors import HomeportError
from homeport.services.reply import Reply

log = logging.getLogger(__name__)
T = TypeVar("T")
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientDisconnected(Exception):
    pass


def frame(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def sse_frames(chunks: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    """Chunks as SSE frames, then [DONE]. A failure mid-stream becomes one error frame before
    [DONE], so clients see why the stream ended instead of a silent cut; so does a stream cut at
    the shutdown deadline. A client disconnect (a cancellation not for shutdown) propagates."""
    handle = StreamHandle(current_drain())
    try:
        async with aclosing(chunks) as items:
            while not handle.cut:
                handle.waiting = True
                try:
                    chunk = await anext(items)
                except StopAsyncIteration:
                    break
                finally:
                    handle.waiting = False
                yield frame(chunk)
    except asyncio.CancelledError:
        if not handle.cut:
            raise
        # The drain cancelled the generation (stopping it as a disconnect would); the client
        # is still there, so take the cancellation back and tell it why the stream ends.
        if (task := asyncio.current_task()) is not None:
            task.uncancel()
    except HomeportError as exc:
        yield frame(exc.to_dict())
    except Exception as exc:
        log.error("stream failed: %s", type(exc).__name__)
        yield frame(INTERNAL_ERROR.to_dict())
    finally:
        handle.close()
    if handle.cut:
        yield frame(server_shutdown_error().to_dict())
    yield DONE


def respond(reply: Reply) -> Response:
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, headers=reply.headers)
    headers = {**SSE_HEADERS, **reply.headers}
    return StreamingResponse(sse_frames(reply.body), media_type="text/event-stream", headers=headers)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Runs `work`, cancelling it if the client disconnects first (then raises ClientDisconnected)
    or if the shutdown deadline passes first (then raises a 503 `server_shutdown`)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    drain = current_drain()
    deadline = asyncio.ensure_future(drain.deadline.wait()) if drain is not None else None
    try:
        await asyncio.wait({task, watcher, *([deadline] if deadline else [])}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if deadline is not None:
            deadline.cancel()
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if drain is not None and drain.deadline.is_set():
                raise server_shutdown_error()
            raise ClientDisconnected
    return task.result()
