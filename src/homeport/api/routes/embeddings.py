"""Embeddings, moderations (a heuristic over embeddings) and rerank: one embedding model behind all three."""

from __future__ import annotations

from fastapi import APIRouter, Request

from homeport.api.routes.deps import services
from homeport.schemas.embeddings import EmbeddingRequest, ModerationRequest, RerankRequest

router = APIRouter(tags=["embeddings"])


@router.post("/v1/embeddings", summary="Embed texts or token ids (float or base64, optional dimensions)")
async def create_embedding(body: EmbeddingRequest, request: Request) -> dict:
    return await services(request).embeddings.create(body)


@router.post("/v1/moderations", summary="Moderate texts (a heuristic: similarity to category descriptions)")
async def create_moderation(body: ModerationRequest, request: Request) -> dict:
    return await services(request).moderations.create(body)


@router.post("/v1/rerank", summary="Order documents by relevance to a query (llama.cpp / vLLM shape)")
@router.post("/rerank", summary="Order documents by relevance to a query (llama.cpp / vLLM shape)")
async def rerank(body: RerankRequest, request: Request) -> dict:
    return await services(request).rerank.create(body)
