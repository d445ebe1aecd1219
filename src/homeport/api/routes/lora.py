"""The reference API's LoRA endpoints (admin key); `services/lora.py` does the work."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from homeport.api.auth import require_admin_key
from homeport.api.routes.deps import services
from homeport.schemas.lora import LoadLorasRequest, UnloadLorasRequest

router = APIRouter(prefix="/v1/internal/lora", tags=["internal"], dependencies=[Depends(require_admin_key)])


@router.get("/list", summary="The LoRA adapters in user_data/loras (admin key)")
async def lora_list(request: Request) -> dict:
    return {"lora_names": await services(request).loras.names()}


@router.post("/load", summary="Apply these LoRAs (replacing the applied ones) to a model (admin key)")
async def lora_load(body: LoadLorasRequest, request: Request) -> str:
    await services(request).loras.apply(body.model, body.lora_names, body.scales)
    return "OK"


@router.post("/unload", summary="Remove every LoRA from a model (admin key)")
async def lora_unload(request: Request, body: UnloadLorasRequest | None = None) -> str:
    await services(request).loras.remove_all(body.model if body else None)
    return "OK"
