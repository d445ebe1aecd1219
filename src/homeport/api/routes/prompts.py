"""`POST /v1/internal/chat-prompt`: the prompt a chat request would be given, without generating."""

from __future__ import annotations

from fastapi import APIRouter, Request

from homeport.api.routes.deps import services
from homeport.schemas.chat import ChatCompletionRequest
from homeport.services.wire.openai_chat import from_chat_request

router = APIRouter(prefix="/v1/internal", tags=["internal"])


@router.post("/chat-prompt", summary="The prompt text a chat completion request renders to (untruncated)")
async def chat_prompt(body: ChatCompletionRequest, request: Request) -> dict:
    async with services(request).models.using(body.model, "text_generation") as model:
        return await model.services.prompts.chat_prompt(from_chat_request(body))
