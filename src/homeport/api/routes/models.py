from __future__ import annotations

from fastapi import APIRouter, Request

from homeport.api.routes.deps import services
from homeport.errors import ModelNotFoundError
from homeport.registry.library import ModelEntry
from homeport.registry.manager import LoadedModel

router = APIRouter(tags=["models"])


def _card(request: Request, entry: ModelEntry, loaded: LoadedModel | None) -> dict:
    card = {
        "id": entry.id,
        "object": "model",
        "created": request.app.state.started_at,
        "owned_by": "homeport",
        "loaded": loaded is not None,
        "format": entry.format,
        "size_bytes": entry.size_bytes,
        "kind": entry.kind,
        "capabilities": _capabilities(entry, loaded),  # e.g. text_generation, embedding; [] = none served yet
    }
    if loaded is not None and loaded.engine.info.context_length:
        card["context_length"] = loaded.engine.info.context_length
        card["loader"] = loaded.engine.info.loader
    return card


def _capabilities(entry: ModelEntry, loaded: LoadedModel | None) -> list[str]:
    """What the model can do now. `vision` needs a projector, given at load (`mmproj`): it is
    listed for a loaded model that took one, never for a model not loaded."""
    found = list(entry.capabilities)
    if "vision" in found:
        marker = getattr(loaded.engine, "media_marker", None) if loaded is not None else None
        if marker is None or marker() is None:
            found.remove("vision")
    return found


@router.get("/v1/models", summary="Every available model, loaded ones first")
async def list_models(request: Request) -> dict:
    listing = await services(request).models.alisting()
    return {"object": "list", "data": [_card(request, entry, loaded) for entry, loaded in listing]}


@router.get("/v1/models/{model_id:path}", summary="One model (ids may contain '/')")
async def retrieve_model(model_id: str, request: Request) -> dict:
    models = services(request).models
    wanted = models.aliases.get(model_id, model_id)
    for entry, loaded in await models.alisting():
        if wanted == entry.id:
            return _card(request, entry, loaded)
    raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
