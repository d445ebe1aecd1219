"""The reference API's `/v1/internal/*` endpoints."""

from __future__ import annotations

import asyncio
import dataclasses

from fastapi import APIRouter, Depends, Request

from homeport.api.auth import require_admin_key
from homeport.api.routes.deps import services
from homeport.schemas.internal import (
    DecodeRequest,
    EncodeRequest,
    LoadModelRequest,
    LogitsRequest,
    StopGenerationRequest,
    UnloadModelRequest,
)
from homeport.registry import validate_load_args
from homeport.services.container import load_template

router = APIRouter(prefix="/v1/internal", tags=["internal"])
# Model management takes the admin key instead of the API key, as in the reference API.
admin_router = APIRouter(prefix="/v1/internal", tags=["internal"], dependencies=[Depends(require_admin_key)])


def _pinned(request: Request, name: str | None):
    """The named text model, pinned for the call: an eviction never pulls it from under a request."""
    return services(request).models.using(name, "text_generation")


@router.post("/encode", summary="Text → token ids (of the request's `model`, or the default one)")
async def encode(body: EncodeRequest, request: Request) -> dict:
    async with _pinned(request, body.model) as model:
        return await model.services.internal.encode(body.text)


@router.post("/decode", summary="Token ids → text")
async def decode(body: DecodeRequest, request: Request) -> dict:
    async with _pinned(request, body.model) as model:
        return await model.services.internal.decode(body.tokens)


@router.post("/token-count", summary="How many tokens a text is")
async def token_count(body: EncodeRequest, request: Request) -> dict:
    async with _pinned(request, body.model) as model:
        return await model.services.internal.count(body.text)


@router.post("/logits", summary="Next-token probabilities, before or after the samplers")
async def logits(body: LogitsRequest, request: Request) -> dict[str, float]:
    async with _pinned(request, body.model) as model:
        return await model.services.internal.logits(body)


@router.post("/stop-generation", summary="Stop every generation, or with {\"id\": ...} the one of that response")
async def stop_generation(request: Request, body: StopGenerationRequest | None = None) -> str:
    for model in services(request).models.loaded():
        model.services.internal.stop_generation(body.id if body else None)
    return "OK"


@router.get("/model/info", summary="The most recently used model, its load arguments and counters")
async def model_info(request: Request) -> dict:
    models = services(request).models
    loaded = models.loaded()
    if not loaded:
        return {"model_name": None, "lora_names": [], "loader": None, "loaded_models": [],
                "loading": models.loads_in_progress()}
    current = loaded[0]
    info = current.engine.info
    return {
        "model_name": info.model_id,
        "lora_names": current.engine.lora_names,
        "loader": info.loader,
        "context_length": info.context_length,
        "args": current.engine.effective_args(),
        "generation": dataclasses.asdict(current.engine.stats()),
        "loaded_models": [m.entry.id for m in loaded],
        "loading": models.loads_in_progress(),  # loads under way: model, kind, progress 0..1 (or None), seconds
        **_image_progress(models),
    }


def _image_progress(models) -> dict:
    """The loaded image model's running job (step / steps) and the steps it has run since load."""
    for model in models.loaded("image"):
        progress = getattr(model.engine, "job_progress", None)
        if progress is not None:
            return {"images": {"model": model.entry.id, **progress()}}
    return {}


@admin_router.get("/model/list", summary="Every available model, loaded ones first (admin key)")
async def model_list(request: Request) -> dict:
    listing = await asyncio.to_thread(services(request).models.listing)
    return {"model_names": [entry.id for entry, _ in listing]}


@admin_router.post("/model/load", summary="Load a model with load arguments (admin key)")
async def model_load(body: LoadModelRequest, request: Request) -> str:
    app_services = services(request)
    args = validate_load_args(body.args)
    template = load_template(app_services.settings, body.instruction_template, body.instruction_template_str)
    await app_services.models.load(body.model_name, args, template)
    return "OK"


@admin_router.post("/model/unload", summary="Unload a model, or every model (admin key)")
async def model_unload(request: Request, body: UnloadModelRequest | None = None) -> str:
    await services(request).models.unload(body.model_name if body else None)
    return "OK"
