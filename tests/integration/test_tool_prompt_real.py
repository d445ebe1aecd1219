"""Tools on models whose chat template cannot show them: the default model (SmolLM2, a ChatML
template with no tools block) and Gemma 3 (the built-in Gemma template), on real servers,
driven by the official client and checked against the OpenAI spec."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import openai
import pytest

from support.server import API_KEY, GEMMA_MODEL_ID, RunningServer, start_server, stop_server

# The reference documentation's tool example, word for word.
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_current_time",
        "description": "Get current time in a specific timezones",
        "parameters": {
            "type": "object",
            "required": ["timezone"],
            "properties": {
                "timezone": {
                    "type": "string",
                    "description": "IANA timezone name (e.g., America/New_York, Europe/London). Use Europe/Berlin "
                    "as local timezone if no timezone provided by the user.",
                }
            },
        },
    },
}
SEED_MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What time is it currently in New York City?"},
]
MARK = "To call a tool, reply with only this JSON"  # homeport's tool prompt
# A Hermes-style template (as Qwen 2.5's) that renders tools itself.
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n<tools>\n{%- for tool in tools %}\n{{ tool | tojson }}"
    "{%- endfor %}\n</tools><|im_end|>\n{%- endif %}"
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{%- for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{%- endfor %}"
    "<|im_end|>\n{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


@pytest.fixture(scope="module")
def smollm(tmp_path_factory) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("tool-prompt"), "--api-key", API_KEY, model=None)
    yield running
    stop_server(running)


@pytest.fixture
def smol(smollm) -> openai.OpenAI:
    return smollm.openai()


def chat_prompt(server: RunningServer, **body) -> str:
    with server.http() as http:
        response = http.post("/v1/internal/chat-prompt", json={"messages": SEED_MESSAGES, **body})
    assert response.status_code == 200, response.text
    return response.json()["prompt"]


@pytest.mark.parametrize("which", ["smollm", "gemma"])
def test_chat_prompt_shows_every_tool_on_templates_without_tools(smollm, server, which):
    target, extra = (smollm, {}) if which == "smollm" else (server, {"model": GEMMA_MODEL_ID})
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
    text = chat_prompt(target, tools=[TIME_TOOL, weather], **extra)
    assert MARK in text
    for tool in (TIME_TOOL, weather):
        assert f'"name": "{tool["function"]["name"]}"' in text
        assert json.dumps(tool["function"]["parameters"], ensure_ascii=False) in text


def test_a_template_that_renders_tools_gets_nothing_added(smollm):
    text = chat_prompt(smollm, tools=[TIME_TOOL], instruction_template_str=HERMES_TEMPLATE)
    assert "<tools>" in text and "get_current_time" in text and MARK not in text


def test_the_reference_tool_example_in_auto_always_gives_text_or_a_valid_call(smol, spec):
    kinds = []
    for seed in range(10):
        reply = smol.chat.completions.create(
            model="x", messages=SEED_MESSAGES, tools=[TIME_TOOL], seed=seed, max_tokens=40,
            temperature=0.6, top_p=0.95, extra_body={"top_k": 20},
        )
        spec.validate("CreateChatCompletionResponse", reply.model_dump(exclude_unset=True))
        message = reply.choices[0].message
        if message.tool_calls:
            kinds.append("call")
            assert reply.choices[0].finish_reason in ("tool_calls", "length")
            for call in message.tool_calls:
                assert call.function.name == "get_current_time"
                jsonschema.validate(json.loads(call.function.arguments), TIME_TOOL["function"]["parameters"])
        else:
            kinds.append("text")
            assert message.content and not message.content.lstrip().startswith(("{", "["))
    assert len(kinds) == 10


def test_a_forced_choice_always_calls_on_the_default_model(smol):
    """Greedy: sampled at 0.6, the 135M model can ramble inside a string argument past max_tokens."""
    questions = ["What time is it currently in New York City?", "And in Tokyo?", "Tell me the time in London."]
    named = {"type": "function", "function": {"name": "get_current_time"}}
    for question in questions:
        for choice in ("required", named):
            messages = [SEED_MESSAGES[0], {"role": "user", "content": question}]
            reply = smol.chat.completions.create(
                model="x", messages=messages, tools=[TIME_TOOL], tool_choice=choice, max_tokens=100, temperature=0,
            )
            calls = reply.choices[0].message.tool_calls
            assert calls and all(c.function.name == "get_current_time" for c in calls), reply
            for call in calls:
                jsonschema.validate(json.loads(call.function.arguments), TIME_TOOL["function"]["parameters"])


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("style", ["openai", "vercel"])
def test_a_full_round_trip_on_the_default_model(smollm, smol, spec, stream, style):
    first = smol.chat.completions.create(
        model="x", messages=SEED_MESSAGES, tools=[TIME_TOOL], tool_choice="required", max_tokens=60, temperature=0,
    )
    call = first.choices[0].message.tool_calls[0]
    if style == "openai":
        assistant = first.choices[0].message.model_dump(exclude_none=True)
    else:  # as the Vercel AI SDK sends it: empty content, the call's fields spelled out
        assistant = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}],
        }
    result = '{"time": "09:41", "timezone": "America/New_York"}'
    history = SEED_MESSAGES + [assistant, {"role": "tool", "tool_call_id": call.id, "content": result}]
    shown = chat_prompt(smollm, messages=history, tools=[TIME_TOOL])
    assert f"Result of get_current_time: {result}" in shown  # the result reaches the model as text
    assert f'{{"name": "get_current_time", "arguments": {call.function.arguments}}}' in shown.replace("\\", "")
    if not stream:
        final = smol.chat.completions.create(model="x", messages=history, tools=[TIME_TOOL], max_tokens=40, temperature=0)
        spec.validate("CreateChatCompletionResponse", final.model_dump(exclude_unset=True))
        message = final.choices[0].message
        assert message.content or message.tool_calls
        return
    chunks = list(
        smol.chat.completions.create(
            model="x", messages=history, tools=[TIME_TOOL], max_tokens=40, temperature=0, stream=True
        )
    )
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert text or calls
    assert chunks[-1].choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_a_forced_call_cut_by_max_tokens_is_never_markup(client):
    """Gemma (a base model) lists call after call; the list is bounded, and a cut keeps the
    completed calls as tool_calls."""
    weather = {
        "type": "function",
        "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    }
    messages = [{"role": "user", "content": "Weather in Paris, Rome, Oslo, Lima and Kyiv?"}]
    for max_tokens in (20, 200):
        reply = client.chat.completions.create(
            model=GEMMA_MODEL_ID, messages=messages, tools=[weather], tool_choice="required", max_tokens=max_tokens,
            temperature=0,
        )
        message = reply.choices[0].message
        assert not message.content, message.content  # never the JSON as content
        if reply.choices[0].finish_reason == "tool_calls":
            assert 1 <= len(message.tool_calls) <= 4
        for call in message.tool_calls or []:
            assert "city" in json.loads(call.function.arguments)
    assert reply.choices[0].finish_reason == "tool_calls"  # 200 tokens is room for the bounded list
