"""The reference API's LoRA endpoints (admin key): adapters are `<user_data_dir>/loras/*.gguf`,
named without the suffix, and apply to one model (the request's `model`, or the default), loading
it if needed. They belong to that loaded engine: unloading or reloading the model drops them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, Depends, Request

from homeport.api.auth import require_admin_key
from homeport.api.routes.deps import services
from homeport.errors import InvalidRequestError
from homeport.schemas.lora import LoadLorasRequest, UnloadLorasRequest

router = APIRouter(prefix="/v1/internal/lora", tags=["internal"], dependencies=[Depends(require_admin_key)])


def _available(user_data_dir: Path) -> dict[str, Path]:
    folder = user_data_dir / "loras"
    if not folder.is_dir():
        return {}
    return {path.stem: path.absolute() for path in sorted(folder.glob("*.gguf")) if path.is_file()}


async def _set_loras(request: Request, model_name: str | None, adapters: list[tuple[Path, float]]) -> None:
    models = services(request).models
    model = await models.acquire(model_name, strict=True)  # pinned: not evicted while its adapters change
    try:
        await model.engine.set_loras(adapters)
    finally:
        models.release(model)


@router.get("/list", summary="The LoRA adapters in user_data/loras (admin key)")
async def lora_list(request: Request) -> dict:
    available = await asyncio.to_thread(_available, services(request).settings.user_data_dir)
    return {"lora_names": list(available)}


@router.post("/load", summary="Apply these LoRAs (replacing the applied ones) to a model (admin key)")
async def lora_load(body: LoadLorasRequest, request: Request) -> str:
    names = body.lora_names
    scales = body.scales if body.scales is not None else [1.0] * len(names)
    if len(scales) != len(names):
        raise InvalidRequestError(f"`scales` has {len(scales)} values for {len(names)} LoRA names", param="scales")
    if len(set(names)) != len(names):
        raise InvalidRequestError("a LoRA is named more than once", param="lora_names")
    available = await asyncio.to_thread(_available, services(request).settings.user_data_dir)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise InvalidRequestError(
            f"unknown LoRA '{unknown[0]}'; available: {', '.join(available) or 'none (put *.gguf files in loras/)'}",
            param="lora_names",
        )
    await _set_loras(request, body.model, [(available[name], scale) for name, scale in zip(names, scales)])
    return "OK"


@router.post("/unload", summary="Remove every LoRA from a model (admin key)")
async def lora_unload(request: Request, body: UnloadLorasRequest | None = None) -> str:
    models = services(request).models
    model_id = models.resolve(body.model if body else None, strict=True)
    if any(m.entry.id == model_id for m in models.loaded()):  # a model not loaded has none to remove
        await _set_loras(request, model_id, [])
    return "OK"
