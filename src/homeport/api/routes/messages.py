"""`POST /v1/messages` and `/v1/messages/count_tokens`: the Anthropic Messages API."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from homeport.api.event_stream import with_model_events
from homeport.api.routes.deps import services
from homeport.errors import HomeportError
from homeport.schemas.anthropic import CountTokensRequest, MessagesRequest
from homeport.services.wire.anthropic import MessagesService, error_envelope

router = APIRouter(tags=["anthropic"])


def _error_event(error: HomeportError) -> tuple[str, dict]:
    return "error", error_envelope(error)[1]


@router.post("/v1/messages", summary="Anthropic Messages (streamed with `stream: true`)")
async def create_message(body: MessagesRequest, request: Request) -> Response:
    return await with_model_events(
        request, body.model, lambda model: MessagesService(model.chat).create(body), _error_event
    )


@router.post("/v1/messages/count_tokens", summary="Anthropic token counting")
async def count_tokens(body: CountTokensRequest, request: Request) -> dict:
    models = services(request).models
    async with models.using(body.model, "text_generation") as model:
        return await MessagesService(model.services.chat).count_tokens(body)
