"""The reference API's `/v1/internal/*` endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from homeport.api.auth import require_admin_key
from homeport.api.routes.deps import services
from homeport.schemas.internal import DecodeRequest, EncodeRequest, LogitsRequest, StopGenerationRequest

router = APIRouter(prefix="/v1/internal", tags=["internal"])
# Model management takes the admin key instead of the API key, as in the reference API.
admin_router = APIRouter(prefix="/v1/internal", tags=["internal"], dependencies=[Depends(require_admin_key)])


@router.post("/encode", summary="Text → token ids")
async def encode(body: EncodeRequest, request: Request) -> dict:
    return await services(request).internal.encode(body.text)


@router.post("/decode", summary="Token ids → text")
async def decode(body: DecodeRequest, request: Request) -> dict:
    return await services(request).internal.decode(body.tokens)


@router.post("/token-count", summary="How many tokens a text is")
async def token_count(body: EncodeRequest, request: Request) -> dict:
    return await services(request).internal.count(body.text)


@router.post("/logits", summary="Next-token probabilities, before or after the samplers")
async def logits(body: LogitsRequest, request: Request) -> dict[str, float]:
    return await services(request).internal.logits(body)


@router.post("/stop-generation", summary="Stop every generation, or with {\"id\": ...} the one of that response")
async def stop_generation(request: Request, body: StopGenerationRequest | None = None) -> str:
    services(request).internal.stop_generation(body.id if body else None)
    return "OK"


@router.get("/model/info", summary="The loaded model, and counters of its generations")
async def model_info(request: Request) -> dict:
    return services(request).internal.model_info()


@admin_router.get("/model/list", summary="Models: the loaded one first, then GGUF files in the model dir (admin key)")
async def model_list(request: Request) -> dict:
    return await services(request).internal.model_list()
