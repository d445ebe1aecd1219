from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from homeport.api.routes.deps import services, with_model
from homeport.schemas.chat import ChatCompletionRequest
from homeport.schemas.completions import CompletionRequest
from homeport.services.audio.chat_audio import transcribe_audio_parts
from homeport.services.wire.openai_chat import from_chat_request

router = APIRouter(tags=["generation"])


@router.post("/v1/completions", summary="Text completion (streamed with `stream: true`)")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    return await with_model(request, body.model, lambda model: model.completions.create(body))


@router.post("/v1/chat/completions", summary="Chat completion (streamed with `stream: true`)")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    body = await transcribe_audio_parts(body, services(request).audio)  # input_audio parts → their transcripts
    # The OpenAI chat adapter maps the body once the model is known (so an unknown model is named first).
    return await with_model(request, body.model, lambda model: model.chat.create(from_chat_request(body)))
