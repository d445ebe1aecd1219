"""The Anthropic Messages API on the real default model, driven by the official `anthropic`
client; bodies and raw stream events are validated with the SDK's own types in strict mode."""

from __future__ import annotations

import json

import anthropic
import httpx
import jsonschema
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from support.server import API_KEY, start_server, stop_server

EVENTS = pydantic.TypeAdapter(RawMessageStreamEvent)
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}},
        "required": ["city"],
        "additionalProperties": False,
    },
}
HI = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("messages"), "--api-key", API_KEY, model=None)
    yield running
    stop_server(running)


@pytest.fixture
def client(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


def _raw_events(server, body: dict, headers: dict | None = None) -> list[tuple[str, dict]]:
    headers = headers or {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    pairs, name = [], None
    with (
        httpx.Client(base_url=server.base_url, timeout=120) as http,
        http.stream("POST", "/v1/messages", json={**body, "stream": True}, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                pairs.append((name, json.loads(line[6:])))
    return pairs


def test_create_returns_a_strictly_valid_message(client, server):
    message = client.messages.create(model="m", max_tokens=12, messages=HI, extra_body={"temperature": 0.2})
    assert message.stop_reason in ("end_turn", "max_tokens") and message.content[0].type == "text"
    assert message.id.startswith("msg_") and message.usage.input_tokens > 0
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        raw = http.post(
            "/v1/messages", json={"model": "m", "max_tokens": 5, "messages": HI}, headers={"x-api-key": API_KEY}
        ).json()
    Message.model_validate(raw, strict=True)


def test_stream_sends_anthropics_event_sequence(client, server):
    pairs = _raw_events(server, {"model": "m", "max_tokens": 10, "messages": HI, "system": "Be brief."})
    names = [name for name, _ in pairs]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert "ping" in names and names.count("content_block_start") == names.count("content_block_stop") >= 1
    for name, data in pairs:
        assert data["type"] == name
        if name != "ping":
            EVENTS.validate_python(data, strict=True)
    with client.messages.stream(model="m", max_tokens=10, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert final.content[0].text == text and final.stop_reason in ("end_turn", "max_tokens")


def test_forced_tool_use_and_tool_result_round_trip(client):
    first = client.messages.create(
        model="m",
        max_tokens=60,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    jsonschema.validate(use.input, WEATHER["input_schema"])
    second = client.messages.create(
        model="m",
        max_tokens=15,
        tools=[WEATHER],
        tool_choice={"type": "none"},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "21 C, sunny"}]},
        ],
    )
    assert second.stop_reason in ("end_turn", "max_tokens") and second.content[0].type == "text"


def test_streamed_input_json_deltas_concatenate_to_valid_json(server):
    pairs = _raw_events(
        server,
        {
            "model": "m",
            "max_tokens": 60,
            "tools": [WEATHER],
            "tool_choice": {"type": "any"},
            "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        },
    )
    partial: dict[int, str] = {}  # "any" allows parallel calls: one JSON document per tool_use block
    for name, data in pairs:
        if name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            partial[data["index"]] = partial.get(data["index"], "") + data["delta"]["partial_json"]
    assert partial
    for text in partial.values():
        jsonschema.validate(json.loads(text), WEATHER["input_schema"])
    start = next(d for n, d in pairs if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use" and start["content_block"]["name"] == "get_weather"
    delta = next(d for n, d in pairs if n == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"


def test_stop_sequence_is_reported(client):
    message = client.messages.create(
        model="m",
        max_tokens=30,
        stop_sequences=["e"],
        messages=[{"role": "user", "content": "Write: hello there"}],
    )
    if message.stop_reason == "stop_sequence":  # the model may end before writing an "e"
        assert message.stop_sequence == "e" and "e" not in message.content[0].text


def test_count_tokens(client):
    counted = client.messages.count_tokens(model="m", messages=HI)
    longer = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "Say hi, " * 20}])
    assert 0 < counted.input_tokens < longer.input_tokens


def test_errors_use_anthropics_envelope(server, client):
    bad_key = anthropic.Anthropic(base_url=server.base_url, api_key="wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as denied:
        bad_key.messages.create(model="m", max_tokens=5, messages=HI)
    assert denied.value.status_code == 401 and denied.value.body["error"]["type"] == "authentication_error"
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        bearer = http.post(
            "/v1/messages/count_tokens", json={"messages": HI}, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert bearer.status_code == 200
        missing = http.post("/v1/messages", json={"messages": HI}, headers={"x-api-key": API_KEY})
    assert missing.status_code == 400
    assert missing.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": missing.json()["error"]["message"]},
    }
    assert "max_tokens" in missing.json()["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="m", max_tokens=5, messages=HI, tools=[{"type": "web_search_20250305", "name": "web_search"}]
        )
    assert "server tool" in refused.value.body["error"]["message"]
