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
    [DONE], so clients see why the stream ended instead of a silent cut."""
    try:
        async with aclosing(chunks) as items:
            async for chunk in items:
                yield frame(chunk)
    except HomeportError as exc:
        yield frame(exc.to_dict())
    except Exception as exc:
        log.error("stream failed: %s", type(exc).__name__)
        yield frame(INTERNAL_ERROR.to_dict())
    yield DONE


def respond(reply: Reply) -> Response:
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, headers=reply.headers)
    headers = {**SSE_HEADERS, **reply.headers}
    return StreamingResponse(sse_frames(reply.body), media_type="text/event-stream", headers=headers)


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Runs `work`, cancelling it if the client disconnects first (then raises ClientDisconnected)."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            watcher.cancel()
            raise ClientDisconnected
        watcher.cancel()
    return task.result()
