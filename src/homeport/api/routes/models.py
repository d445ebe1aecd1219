from __future__ import annotations

from fastapi import APIRouter, Request

from homeport.api.routes.deps import services
from homeport.errors import ModelNotFoundError

router = APIRouter(tags=["models"])


def _card(request: Request) -> dict:
    info = services(request).engine.info
    return {
        "id": info.model_id,
        "object": "model",
        "created": request.app.state.started_at,
        "owned_by": "homeport",
        "loaded": True,
        "context_length": info.context_length,
        "loader": info.loader,
    }


@router.get("/v1/models", summary="List the models")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_card(request)]}


@router.get("/v1/models/{model_id:path}", summary="One model (ids may contain '/')")
async def retrieve_model(model_id: str, request: Request) -> dict:
    card = _card(request)
    if model_id != card["id"]:
        raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
    return card
