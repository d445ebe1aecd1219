"""`/v1/responses`: OpenAI's stateful Responses API (create, retrieve, input items, delete, cancel)."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse

from homeport.api.event_stream import named_frames, with_model_events
from homeport.api.routes.deps import services
from homeport.api.streaming import SSE_HEADERS
from homeport.errors import HomeportError
from homeport.schemas.responses import ResponsesRequest
from homeport.services.state.responses_store import ResponseStore
from homeport.services.wire.responses import ResponsesService

router = APIRouter(tags=["responses"])


def _service(request: Request) -> ResponsesService:
    """One per app, made on first use (it opens the state database)."""
    service = getattr(request.app.state, "responses", None)
    if service is None:
        settings = services(request).settings
        path = settings.state_db or settings.user_data_dir / "homeport.db"
        service = request.app.state.responses = ResponsesService(ResponseStore(path))
    return service


def _error_event(error: HomeportError) -> tuple[str, dict]:
    inner = error.to_dict()["error"]
    return "error", {
        "type": "error",
        "code": inner["code"] or inner["type"],
        "message": inner["message"],
        "param": inner["param"],
        "sequence_number": 0,
    }


@router.post("/v1/responses", summary="Create a response (streamed with `stream: true`)")
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    service = _service(request)
    if not body.background:
        return await with_model_events(request, body.model, lambda m: service.create(m.chat, body), _error_event)
    # A background run outlives this request: it pins the model itself until it ends.
    models = services(request).models
    model = await models.acquire(body.model)
    try:
        result, headers = await service.create(model.services.chat, body, release=lambda: models.release(model))
    except BaseException:
        models.release(model)
        raise
    if isinstance(result, dict):
        return Response(content=_json(result), media_type="application/json", headers=headers)
    return StreamingResponse(
        named_frames(result, _error_event), media_type="text/event-stream", headers={**SSE_HEADERS, **headers}
    )


def _json(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


@router.get("/v1/responses/{response_id}", summary="Retrieve a response (stream a background one again)")
async def retrieve_response(
    response_id: str, request: Request, stream: bool = False, starting_after: int | None = None
) -> Response:
    service = _service(request)
    if stream:
        events = await service.stream_again(response_id, starting_after)
        return StreamingResponse(
            named_frames(events, _error_event), media_type="text/event-stream", headers=SSE_HEADERS
        )
    return Response(content=_json(await service.retrieve(response_id)), media_type="application/json")


@router.get("/v1/responses/{response_id}/input_items", summary="List a response's input items")
async def list_input_items(
    response_id: str,
    request: Request,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict:
    return await _service(request).list_input_items(response_id, after=after, limit=limit, order=order)


@router.delete("/v1/responses/{response_id}", summary="Delete a stored response")
async def delete_response(response_id: str, request: Request) -> dict:
    return await _service(request).delete(response_id)


@router.post("/v1/responses/{response_id}/cancel", summary="Cancel a background response")
async def cancel_response(response_id: str, request: Request) -> dict:
    return await _service(request).cancel(response_id)
