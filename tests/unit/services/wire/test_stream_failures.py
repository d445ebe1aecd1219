"""A generation failing mid-stream (the fake engine fails at a step), in-process: the Anthropic
stream ends with its `error` event, the Responses stream with `response.failed` (spec-valid);
an `error` event that the HTTP layer adds comes next in the sequence."""

from __future__ import annotations

import json

from anthropic.types.beta_error_response import BetaErrorResponse

from homeport.api.routes.responses import _Sequenced
from homeport.engines.fake import FakeEngine
from homeport.errors import ServiceUnavailableError
from support.openapi import SpecValidator


async def _named_events(client, path: str, body: dict) -> list[tuple[str, dict]]:
    async with client.http.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines()]
    names = [line[7:] for line in lines if line.startswith("event: ")]
    return list(zip(names, [json.loads(line[6:]) for line in lines if line.startswith("data: ")], strict=True))


async def test_anthropic_stream_ends_with_an_error_event(make_client):
    client = make_client(FakeEngine(fail_at_step=5))
    body = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    pairs = await _named_events(client, "/v1/messages", body)
    name, error = pairs[-1]
    assert name == "error" and error["error"]["type"] == "api_error"
    BetaErrorResponse.model_validate(error, strict=True)
    assert "content_block_delta" in [n for n, _ in pairs] and "message_stop" not in [n for n, _ in pairs]


async def test_responses_stream_ends_failed(make_client):
    client = make_client(FakeEngine(fail_at_step=5))
    pairs = await _named_events(client, "/v1/responses", {"model": "m", "input": "hi", "max_output_tokens": 50})
    spec = SpecValidator()
    for _, data in pairs:
        spec.validate("ResponseStreamEvent", data)
    name, failed = pairs[-1]
    assert name == "response.failed" and failed["response"]["error"]["code"] == "server_error"
    assert [d["sequence_number"] for _, d in pairs] == list(range(len(pairs)))


async def test_an_error_event_added_by_the_http_layer_comes_next_in_sequence():
    sequenced = _Sequenced()

    async def events():
        for number in range(3):
            yield "response.output_text.delta", {"sequence_number": number}

    assert [d["sequence_number"] async for _, d in sequenced.track(events())] == [0, 1, 2]
    name, error = sequenced.error_event(ServiceUnavailableError("shutting down", code="server_shutdown"))
    assert name == "error" and error["sequence_number"] == 3 and error["code"] == "server_shutdown"
    SpecValidator().validate("ResponseStreamEvent", error)


async def test_background_streams_go_through_the_same_framing(make_client):
    client = make_client(FakeEngine())
    body = {"model": "m", "input": "hi", "max_output_tokens": 5, "background": True}
    pairs = await _named_events(client, "/v1/responses", body)
    assert pairs[-1][0] == "response.incomplete"  # the fake writes past max_output_tokens
    numbers = [d["sequence_number"] for _, d in pairs]
    response_id = pairs[-1][1]["response"]["id"]
    async with client.http.stream("GET", f"/v1/responses/{response_id}", params={"stream": "true"}) as again:
        frames = [json.loads(line[6:]) async for line in again.aiter_lines() if line.startswith("data: ")]
    assert [f["sequence_number"] for f in frames] == numbers
