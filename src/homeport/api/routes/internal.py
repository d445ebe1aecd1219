"""The reference API's `/v1/internal/*` endpoints."""

from __future__ import annotations

from fastapi import APIRouter, Request

from homeport.api.routes.deps import services
from homeport.schemas.internal import DecodeRequest, EncodeRequest

router = APIRouter(prefix="/v1/internal", tags=["internal"])


@router.post("/encode", summary="Text → token ids")
async def encode(body: EncodeRequest, request: Request) -> dict:
    return await services(request).tokens.encode(body.text)


@router.post("/decode", summary="Token ids → text")
async def decode(body: DecodeRequest, request: Request) -> dict:
    return await services(request).tokens.decode(body.tokens)


@router.post("/token-count", summary="How many tokens a text is")
async def token_count(body: EncodeRequest, request: Request) -> dict:
    return await services(request).tokens.count(body.text)


@router.get("/model/info", summary="The loaded model, and counters of its generations")
async def model_info(request: Request) -> dict:
    return services(request).tokens.model_info()
