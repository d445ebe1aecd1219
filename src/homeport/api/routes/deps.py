"""How routes reach the services built at start-up, and the model a request names."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request
from fastapi.responses import Response

from homeport.api.streaming import OPENAI_SSE, ClientDisconnected, Framing, respond, until_disconnect
from homeport.services.container import ModelServices, Services
from homeport.services.reply import Reply


def services(request: Request) -> Services:
    return request.app.state.services


async def with_model(
    request: Request, model_name: str | None, call: Callable[[ModelServices], Awaitable[Reply]],
    framing: Framing = OPENAI_SSE,
) -> Response:
    """Runs `call` on the named model's services (loading it if needed) and keeps the model
    pinned until the response, streamed (in the wire format's `framing`) or not, is over; a
    client gone before then cancels it."""
    models = services(request).models
    model = await models.acquire(model_name)
    try:
        reply = await until_disconnect(request, call(model.services))
    except ClientDisconnected:
        models.release(model)
        return Response(status_code=499)
    except BaseException:
        models.release(model)
        raise
    if isinstance(reply.body, dict):
        models.release(model)
        return respond(reply, framing)

    async def released_at_end(chunks: AsyncIterator) -> AsyncIterator:
        try:
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()
            models.release(model)

    return respond(dataclasses.replace(reply, body=released_at_end(reply.body)), framing)
