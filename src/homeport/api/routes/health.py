"""Liveness, public (no API key) so supervisors and load balancers can probe it."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/health", summary="Liveness")
@router.get("/v1/internal/health", summary="Liveness (reference API path)")
async def health() -> dict:
    return {"status": "ok"}
