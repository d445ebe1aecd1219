from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from homeport.api.routes.deps import services
from homeport.api.streaming import ClientDisconnected, respond, until_disconnect
from homeport.schemas.chat import ChatCompletionRequest
from homeport.schemas.completions import CompletionRequest

router = APIRouter(tags=["generation"])


@router.post("/v1/completions", summary="Text completion (streamed with `stream: true`)")
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    try:
        return respond(await until_disconnect(request, services(request).completions.create(body)))
    except ClientDisconnected:
        return Response(status_code=499)


@router.post("/v1/chat/completions", summary="Chat completion (streamed with `stream: true`)")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    try:
        return respond(await until_disconnect(request, services(request).chat.create(body)))
    except ClientDisconnected:
        return Response(status_code=499)
