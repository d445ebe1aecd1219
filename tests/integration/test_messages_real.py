"""The Anthropic Messages API on the real default model, driven by the official `anthropic`
client; bodies and raw stream events are validated with the SDK's own types in strict mode."""

from __future__ import annotations

import json
import threading

import anthropic
import httpx
import jsonschema
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.beta_error_response import BetaErrorResponse

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
# SmolLM2's ChatML, but the reply starts inside <think> when thinking is on (as Qwen3's template
# does): the 135M model never writes </think> itself, so only the budget ends its reasoning.
THINK_TEMPLATE = """{%- for message in messages %}<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% if enable_thinking %}<think>
{% endif %}{% endif %}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("messages"), "--api-key", API_KEY, model=None)
    yield running
    stop_server(running)


@pytest.fixture
def client(server):
    return anthropic.Anthropic(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture
def thinking_template(server):
    """The default model's per-model settings name THINK_TEMPLATE (read on each request)."""
    home = server.log_path.parent
    (home / "instruction-templates").mkdir(exist_ok=True)
    (home / "instruction-templates" / "think.jinja").write_text(THINK_TEMPLATE)
    (home / "models").mkdir(exist_ok=True)
    settings = home / "models" / "config-user.yaml"
    settings.write_text("smollm2:\n  instruction_template: think\n")
    yield
    settings.unlink()


def _raw_events(server, body: dict, headers: dict | None = None, on_event=None) -> list[tuple[str, dict]]:
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
                if on_event is not None:
                    on_event(len(pairs))
    return pairs


def _tokens(server, text: str) -> int:
    with server.http() as http:
        return http.post("/v1/internal/token-count", json={"text": text}).json()["length"]


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


def test_the_thinking_budget_ends_the_reasoning_and_the_answer_follows(client, server, thinking_template):
    question = [{"role": "user", "content": "Explain in detail how photosynthesis works."}]
    thinking = {"type": "enabled", "budget_tokens": 24}
    # Greedy: a sampled reply may end its turn inside the reasoning, before the budget (no answer).
    message = client.messages.create(model="m", max_tokens=60, thinking=thinking, messages=question,
                                     extra_body={"temperature": 0})
    Message.model_validate(message.model_dump(mode="json"), strict=True)
    assert [block.type for block in message.content][:2] == ["thinking", "text"]
    reasoning = message.content[0]
    assert reasoning.signature and 0 < _tokens(server, reasoning.thinking) <= 24 + 2  # + re-tokenization slack
    assert message.content[1].text and message.usage.output_tokens <= 60
    pairs = _raw_events(server, {"model": "m", "max_tokens": 40, "thinking": thinking, "messages": question, "temperature": 0})
    for name, data in pairs:
        if name != "ping":
            EVENTS.validate_python(data, strict=True)
    deltas = [d["delta"] for n, d in pairs if n == "content_block_delta" and d["index"] == 0]
    assert deltas[0]["type"] == "thinking_delta" and deltas[-1]["type"] == "signature_delta"
    assert _tokens(server, "".join(d.get("thinking", "") for d in deltas)) <= 24 + 2
    stop = next(i for i, (n, d) in enumerate(pairs) if n == "content_block_stop" and d["index"] == 0)
    assert pairs[stop - 1][1]["delta"]["type"] == "signature_delta"
    # The signed thinking block goes back in the history as Anthropic's clients send it.
    again = client.messages.create(
        model="m",
        max_tokens=8,
        messages=[
            *question,
            {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]},
            {"role": "user", "content": "Thanks."},
        ],
    )
    assert again.stop_reason in ("end_turn", "max_tokens")


def test_a_generation_failing_mid_stream_ends_with_an_error_event(server):
    """Unloading the model under a running stream fails its generation (last in this module: the
    next request would load the model again)."""
    essay = {
        "name": "write_essay",
        "description": "Write an essay",
        "input_schema": {"type": "object", "properties": {"essay": {"type": "string", "minLength": 1500}}, "required": ["essay"]},
    }
    body = {
        "model": "m",
        "max_tokens": 3000,
        "tools": [essay],
        "tool_choice": {"type": "tool", "name": "write_essay"},  # the grammar keeps it writing
        "messages": [{"role": "user", "content": "Write an essay about the sea."}],
    }
    unloaded = threading.Event()

    def unload_once(count: int) -> None:
        if count == 8 and not unloaded.is_set():
            unloaded.set()
            with server.http() as http:
                assert http.post("/v1/internal/model/unload", json={}).status_code == 200

    pairs = _raw_events(server, body, on_event=unload_once)
    assert unloaded.is_set()
    name, error = pairs[-1]
    assert name == "error" and error["error"]["type"] == "api_error" and "unloaded" in error["error"]["message"]
    BetaErrorResponse.model_validate(error, strict=True)
    assert "message_stop" not in [n for n, _ in pairs] and "input_json_delta" in json.dumps(pairs)
