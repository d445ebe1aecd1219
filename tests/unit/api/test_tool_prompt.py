"""Tools for templates that cannot show them (homeport's own tool prompt), over the fake engine.

The fake model's name picks the built-in Alpaca template, which shows no tools; Qwen's name picks
ChatML, which renders them Hermes-style."""

import json

import pytest

from homeport.engines.fake import FakeEngine
from homeport.services.text.prompts.tool_prompt import history_as_text
from support.sse import parse_sse

CHAT = "/v1/chat/completions"
PROMPT = "/v1/internal/chat-prompt"
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
CALL = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
MARK = "To call a tool, reply with only this JSON"  # homeport's tool prompt (Qwen's says MARK too)


def fake(script: str = "", model_id: str = "fake-model") -> FakeEngine:
    return FakeEngine(model_id=model_id, script=script, context_length=4096)


async def prompt_of(client, **body) -> str:
    response = await client.http.post(PROMPT, json={"messages": USER, **body})
    assert response.status_code == 200, response.text
    return response.json()["prompt"]


async def test_a_template_without_tools_gets_homeports_tool_prompt(make_client):
    text = await prompt_of(make_client(fake()), tools=[WEATHER, TIME])
    assert MARK in text
    for tool in (WEATHER, TIME):
        assert json.dumps(tool["function"]["parameters"]) in text
        assert f'"name": "{tool["function"]["name"]}"' in text
    assert '{"name": "<tool name>", "arguments":' in text
    # the system section comes before the user's turn
    assert text.index(MARK) < text.index("Weather in Paris?")


async def test_a_template_that_renders_tools_keeps_its_own(make_client):
    text = await prompt_of(make_client(fake(model_id="Qwen2.5-0.5B-Instruct")), tools=[WEATHER])
    assert MARK not in text and "<tools>" in text and "get_weather" in text


@pytest.mark.parametrize(
    ("model_id", "server", "request_mode", "shown"),
    [
        ("Qwen2.5-0.5B-Instruct", "auto", "generic", True),  # the request forces homeport's prompt
        ("fake-model", "auto", "template", False),  # the request keeps the template's (none)
        ("fake-model", "template", None, False),  # the server's --tool-prompt
        ("Qwen2.5-0.5B-Instruct", "generic", None, True),
    ],
)
async def test_tool_prompt_mode(make_client, model_id, server, request_mode, shown):
    client = make_client(fake(model_id=model_id), tool_prompt=server)
    extra = {"tool_prompt": request_mode} if request_mode else {}
    text = await prompt_of(client, tools=[WEATHER], **extra)
    assert (MARK in text) is shown
    if shown:
        assert "<tools>" not in text  # never both


async def test_no_tool_prompt_when_the_choice_is_none_or_the_mode_is_chat(make_client):
    client = make_client(fake())
    assert MARK not in await prompt_of(client, tools=[WEATHER], tool_choice="none")
    assert "get_weather" not in await prompt_of(client, tools=[WEATHER], mode="chat")


async def test_a_bad_tool_prompt_value_is_400(make_client):
    response = await make_client(fake()).http.post(CHAT, json={"messages": USER, "tool_prompt": "mine"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "tool_prompt"


async def test_a_forced_choice_says_which_tool(make_client):
    named = {"type": "function", "function": {"name": "get_time"}}
    text = await prompt_of(make_client(fake()), tools=[WEATHER, TIME], tool_choice=named)
    assert "Call get_time now." in text


async def test_history_calls_and_results_become_text(make_client):
    calls = [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    messages = USER + [
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]
    text = await prompt_of(make_client(fake()), messages=messages, tools=[WEATHER, TIME])
    assert '[{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {}}]' in text
    # both results in one user turn, each named after its call
    assert "Result of get_weather: sunny\nResult of get_time: noon" in text
    assert text.count("### Instruction:") == 2


def test_history_as_text_keeps_what_the_template_shows():
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": {}}}]},
        {"role": "tool", "tool_call_id": "a", "name": "f", "content": "r"},
    ]
    assert history_as_text(history, calls=False, results=False) == history
    converted = history_as_text(history, calls=True, results=False)
    assert converted[1] == {"role": "assistant", "content": 'Let me look.\n{"name": "f", "arguments": {}}'}
    assert converted[2] == history[2]
    assert history_as_text(history, calls=False, results=True)[2] == {"role": "user", "content": "Result of f: r"}


async def test_auto_is_guided_by_a_grammar_that_admits_text_or_calls(make_client):
    engine = fake("It is sunny.")
    client = make_client(engine)
    body = (await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER]})).json()
    grammar = engine.requests[-1].sampling.grammar
    assert grammar.kind == "json_schema" and grammar.or_text
    schema = json.loads(grammar.source)
    one, many = schema["anyOf"]
    assert one["properties"]["name"] == {"const": "get_weather"} and many["type"] == "array"
    message = body["choices"][0]["message"]
    assert message["content"] == "It is sunny." and "tool_calls" not in message
    assert body["choices"][0]["finish_reason"] == "stop"
    # without parallel calls: one call only
    await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER], "parallel_tool_calls": False})
    assert "anyOf" not in json.loads(engine.requests[-1].sampling.grammar.source)


async def test_no_guide_where_the_template_shows_tools_or_a_format_is_asked_for(make_client):
    engine = fake("ok", model_id="Qwen2.5-0.5B-Instruct")
    client = make_client(engine)
    await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER]})
    assert engine.requests[-1].sampling.grammar is None
    engine = fake("{}")
    client = make_client(engine)
    await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER], "response_format": {"type": "json_object"}})
    assert engine.requests[-1].sampling.grammar.kind == "json" and not engine.requests[-1].sampling.grammar.or_text


async def test_a_guided_call_is_parsed_and_streams_name_first_then_arguments(make_client, spec):
    client = make_client(fake(CALL))
    body = (await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER]})).json()
    spec.validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and json.loads(call["function"]["arguments"]) == {"city": "Paris"}

    response = await client.http.post(CHAT, json={"messages": USER, "tools": [WEATHER], "stream": True})
    chunks, done = parse_sse(response.text)
    assert done
    deltas = []
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk)
        deltas += chunk["choices"][0]["delta"].get("tool_calls") or []
        assert not chunk["choices"][0]["delta"].get("content")
    assert deltas[0]["function"]["name"] == "get_weather" and deltas[0]["id"].startswith("call_")
    pieces = [d["function"]["arguments"] for d in deltas[1:]]
    assert len(pieces) > 1  # the arguments stream as generated, not in one piece at the end
    assert json.loads("".join(pieces)) == {"city": "Paris"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_a_forced_call_list_cut_short_keeps_the_completed_calls(make_client, spec):
    script = f'[{CALL}, {{"name": "get_time", "arguments": {{}}}}, {{"name": "get_wea'
    client = make_client(fake(script))
    body = (
        await client.http.post(
            CHAT, json={"messages": USER, "tools": [WEATHER, TIME], "tool_choice": "required", "max_tokens": len(script) - 3}
        )
    ).json()
    spec.validate("CreateChatCompletionResponse", body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None  # never the markup
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["get_weather", "get_time"]


async def test_odd_schemas_and_history_calls_are_never_a_500(make_client):
    odd = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": ["string", "null"]}, "b": "x"}, "required": ["a", "b", 3]}}}
    history = USER + [
        {"role": "assistant", "content": "", "tool_calls": [{"id": "a", "type": "function", "function": "oops"}]},
        {"role": "tool", "tool_call_id": "a", "content": "r"},
    ]
    client = make_client(fake("ok"))
    text = await prompt_of(client, messages=history, tools=[odd])
    assert '"arguments": {"a": "...", "b": "..."}' in text and "Result of a tool: r" in text
    response = await client.http.post(CHAT, json={"messages": history, "tools": [odd]})
    assert response.status_code in (200, 400), response.text
