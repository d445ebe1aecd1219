"""SSE with named events (`event: NAME` + `data: JSON`), as the Anthropic Messages and OpenAI
Responses streams send them (no `[DONE]` marker): a `Framing` for api/streaming.py's one stream
writer, and `deps.with_model` in that framing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

from homeport.api.routes.deps import with_model
from homeport.api.streaming import Framing, sse_frames
from homeport.errors import HomeportError
from homeport.services.container import ModelServices
from homeport.services.reply import Reply

Named = tuple[str, dict]
ErrorEvent = Callable[[HomeportError], Named]
Result = tuple[dict | AsyncIterator[Named], dict[str, str]]


def named_frame(name: str, data: dict) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {name}\ndata: {body}\n\n".encode()


def named_framing(on_error: ErrorEvent) -> Framing:
    """Items are (event name, data); a failure mid-stream ends it with the format's error event."""
    return Framing(item=lambda item: named_frame(*item), error=lambda exc: named_frame(*on_error(exc)))


def named_frames(events: AsyncIterator[Named], on_error: ErrorEvent) -> AsyncIterator[bytes]:
    return sse_frames(events, named_framing(on_error))


async def with_model_events(
    request: Request,
    model_name: str | None,
    call: Callable[[ModelServices], Awaitable[Result]],
    on_error: ErrorEvent,
) -> Response:
    """`deps.with_model` for services that answer (body, headers) and stream named events."""

    async def as_reply(model: ModelServices) -> Reply:
        body, headers = await call(model)
        return Reply(body, headers)

    return await with_model(request, model_name, as_reply, named_framing(on_error))
