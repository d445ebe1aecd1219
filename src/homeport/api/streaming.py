"""Responses for a service's result: SSE frames for streams, JSON otherwise; and cancellation
of a non-streaming generation when its client goes away."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from homeport.api.drain import END, StreamHandle, current_drain, server_shutdown_error
from homeport.api.errors import INTERNAL_ERROR
from homeport.errors import HomeportError
from homeport.services.reply import Reply

log = logging.getLogger(__name__)
T = TypeVar("T")
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientDisconnected(Exception):
    pass


_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # one encoder for every chunk


def frame(payload: dict) -> bytes:
    return b"data: " + _encode(payload).encode() + b"\n\n"


@dataclass(frozen=True)
class Framing:
    """How a wire format writes a stream: each item, the one error frame that ends a failed
    stream, and the end marker (OpenAI's `[DONE]`; none for named-event streams)."""

    item: Callable[[Any], bytes]
    error: Callable[[HomeportError], bytes]
    end: bytes = b""


OPENAI_SSE = Framing(item=frame, error=lambda exc: frame(exc.to_dict()), end=DONE)


async def sse_frames(chunks: AsyncIterator[Any], framing: Framing = OPENAI_SSE) -> AsyncIterator[bytes]:
    """Chunks as SSE frames, then the end marker. A failure mid-stream becomes one error frame
    before it, so clients see why the stream ended instead of a silent cut; so does a stream cut at
    the shutdown deadline. A client disconnect (a cancellation not for shutdown) propagates."""
    handle = StreamHandle(current_drain())
    try:
        async with aclosing(chunks) as items:
            while (chunk := await handle.next(items)) is not END:
                yield framing.item(chunk)
    except asyncio.CancelledError:
        # The drain cancelled the generation (stopping it as a disconnect would): the stream
        # ends with an error frame below. A client that went away: the cancellation goes on.
        if not handle.took_back_cancel():
            raise
    except HomeportError as exc:
        yield framing.error(exc)
    except Exception as exc:
        log.error("stream failed: %s", type(exc).__name__)
        yield framing.error(INTERNAL_ERROR)
    finally:
        handle.close()
    if handle.cut:
        yield framing.error(server_shutdown_error())
    if framing.end:
        yield framing.end


def respond(reply: Reply, framing: Framing = OPENAI_SSE) -> Response:
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, headers=reply.headers)
    headers = {**SSE_HEADERS, **reply.headers}
    return StreamingResponse(sse_frames(reply.body, framing), media_type="text/event-stream", headers=headers)


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
