"""Tool calling and reasoning through /v1/chat/completions, over the fake engine."""

import json

import pytest

from homeport.engines.fake import FakeEngine
from support.sse import parse_sse

CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
HERMES_CALLS = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
    '<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>'
)
QWEN = "Qwen2.5-0.5B-Instruct-Q4_K_M"  # the built-in ChatML template renders tools Hermes-style


def qwen(make_client, script: str):
    engine = FakeEngine(model_id=QWEN, script=script, context_length=4096)
    return engine, make_client(engine)


async def test_auto_tool_calls_are_parsed(make_client, spec):
    engine, client = qwen(make_client, HERMES_CALLS)
    body = (await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER, TIME]})).json()
    spec.validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    calls = choice["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    # the tools reached the prompt through the template
    assert "get_weather" in engine.detokenize(engine.requests[-1].prompt_tokens)


async def test_auto_tool_calls_stream_name_first_then_arguments(make_client, spec):
    _, client = qwen(make_client, HERMES_CALLS)
    response = await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER, TIME], "stream": True})
    chunks, done = parse_sse(response.text)
    assert done
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk)
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk["choices"][0]["delta"].get("tool_calls", []):
            entry = calls.setdefault(delta["index"], {"name": None, "arguments": "", "id": None, "deltas": 0})
            entry["deltas"] += 1
            if "id" in delta:
                assert entry["id"] is None and entry["arguments"] == ""  # id and name come first, once
                entry["id"], entry["name"] = delta["id"], delta["function"]["name"]
            entry["arguments"] += delta["function"].get("arguments", "")
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[0]["deltas"] == 2  # the name first (empty arguments), then the arguments
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert not any(c["choices"][0]["delta"].get("content") for c in chunks)


async def test_parallel_tool_calls_false_keeps_the_first(make_client):
    _, client = qwen(make_client, HERMES_CALLS)
    body = (await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER, TIME], "parallel_tool_calls": False})).json()
    assert [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]] == ["get_weather"]


async def test_tool_choice_none_leaves_the_text_alone(make_client):
    engine, client = qwen(make_client, HERMES_CALLS)
    body = (await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER], "tool_choice": "none"})).json()
    assert body["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in body["choices"][0]["message"]
    assert "get_weather" not in engine.detokenize(engine.requests[-1].prompt_tokens)


async def test_required_and_named_choices_are_enforced_by_a_grammar(make_client):
    # The fake model's template shows no tools: homeport's tool prompt needs room beyond 512 tokens.
    engine = FakeEngine(script='[{"name": "get_weather", "arguments": {"city": "Oslo"}}]', context_length=4096)
    client = make_client(engine)
    body = (await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER, TIME], "tool_choice": "required"})).json()
    grammar = engine.requests[-1].sampling.grammar
    schema = json.loads(grammar.source)
    assert grammar.kind == "json_schema" and not grammar.or_text
    one, many = schema["anyOf"]  # one call bare, or a bounded list of them
    assert many["type"] == "array" and (many["minItems"], many["maxItems"]) == (1, 4) and many["items"] == one
    assert {s["properties"]["name"]["const"] for s in one["anyOf"]} == {"get_weather", "get_time"}
    assert body["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    named = {"type": "function", "function": {"name": "get_weather"}}
    engine.script = '{"name": "get_weather", "arguments": {"city": "Rome"}}'
    body = (await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER, TIME], "tool_choice": named})).json()
    schema = json.loads(engine.requests[-1].sampling.grammar.source)
    assert schema["properties"]["name"] == {"const": "get_weather"}
    assert schema["properties"]["arguments"] == WEATHER["function"]["parameters"]
    assert json.loads(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Rome"}


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "retrieval"}]}, "tools[0]"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ],
)
async def test_bad_tool_requests_are_400(client, spec, extra, param):
    response = await client.http.post(CHAT, json={"messages": USER, **extra})
    assert response.status_code == 400, response.text
    spec.validate("ErrorResponse", response.json())
    assert response.json()["error"]["param"] == param


async def test_legacy_functions_get_a_function_call(make_client):
    _, client = qwen(make_client, HERMES_CALLS)
    payload = {"messages": USER, "functions": [WEATHER["function"], TIME["function"]], "function_call": "auto"}
    body = (await client.http.post(CHAT, json=payload)).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"]["name"] == "get_weather"
    assert "tool_calls" not in choice["message"]


async def test_official_client_tool_round_trip(make_client):
    _, client = qwen(make_client, HERMES_CALLS)
    oai = client.openai()
    first = await oai.chat.completions.create(model=QWEN, messages=USER, tools=[WEATHER])
    call = first.choices[0].message.tool_calls[0]
    messages = USER + [first.choices[0].message.model_dump(exclude_none=True),
                       {"role": "tool", "tool_call_id": call.id, "content": "18°C, sunny"}]
    second = await oai.chat.completions.create(model=QWEN, messages=messages, tools=[WEATHER])
    assert second.choices[0].finish_reason in ("tool_calls", "stop")


async def test_reasoning_is_separated_whole_and_streamed(make_client, spec):
    client = make_client(FakeEngine(script="<think>Paris is in France.</think>\n\nIt is sunny."))
    body = (await client.http.post(CHAT, json={"messages": USER})).json()
    spec.validate("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message["content"] == "It is sunny."
    assert message["reasoning_content"] == message["reasoning"] == "Paris is in France."
    chunks, _ = parse_sse((await client.http.post(CHAT, json={"messages": USER, "stream": True})).text)
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content", "") for c in chunks)
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert (reasoning, content) == ("Paris is in France.", "It is sunny.")
    assert "".join(c["choices"][0]["delta"].get("reasoning", "") for c in chunks) == reasoning
