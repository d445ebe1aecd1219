"""`/v1/responses`: OpenAI's stateful Responses API (create, retrieve, input items, delete, cancel)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
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


class _Sequenced:
    """A stream's events passed through, remembering the last sequence number: the `error` event
    that ends a stream cut short (a shutdown, a failure outside the service) comes next in line."""

    def __init__(self) -> None:
        self.last = -1

    async def track(self, events: AsyncIterator[tuple[str, dict]]) -> AsyncIterator[tuple[str, dict]]:
        async with aclosing(events) as stream:
            async for name, data in stream:
                self.last = data.get("sequence_number", self.last)
                yield name, data

    def error_event(self, error: HomeportError) -> tuple[str, dict]:
        return error_event(error, self.last + 1)


def error_event(error: HomeportError, sequence_number: int) -> tuple[str, dict]:
    """The Responses stream's `error` event (also written by a cluster ingress that cuts a stream)."""
    inner = error.to_dict()["error"]
    return "error", {
        "type": "error",
        "code": inner["code"] or inner["type"],
        "message": inner["message"],
        "param": inner["param"],
        "sequence_number": sequence_number,
    }


def _event_stream(events: AsyncIterator[tuple[str, dict]], headers: dict[str, str] | None = None) -> Response:
    sequenced = _Sequenced()
    frames = named_frames(sequenced.track(events), sequenced.error_event)
    return StreamingResponse(frames, media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})


@router.post("/v1/responses", summary="Create a response (streamed with `stream: true`)")
async def create_response(body: ResponsesRequest, request: Request) -> Response:
    service = _service(request)
    if not body.background:
        sequenced = _Sequenced()

        async def create(model) -> tuple:
            result, headers = await service.create(model.chat, body)
            return (result if isinstance(result, dict) else sequenced.track(result)), headers

        return await with_model_events(request, body.model, create, sequenced.error_event)
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
    return _event_stream(result, headers)


def _json(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


@router.get("/v1/responses/{response_id}", summary="Retrieve a response (stream a background one again)")
async def retrieve_response(
    response_id: str, request: Request, stream: bool = False, starting_after: int | None = None
) -> Response:
    service = _service(request)
    if stream:
        return _event_stream(await service.stream_again(response_id, starting_after))
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
