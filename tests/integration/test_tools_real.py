"""Tool calling on the real default model (a base model: forced choices must still validate)."""

from __future__ import annotations

import json

import jsonschema
import pydantic

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "days": {"type": "integer", "minimum": 1, "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
MESSAGES = [{"role": "user", "content": "What's the weather in Paris for the next 3 days?"}]


def test_forced_tool_call_round_trip_with_the_official_client(client):
    first = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=[WEATHER], max_tokens=80,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    history = MESSAGES + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny", "celsius": 21}'},
    ]
    second = client.chat.completions.create(model="m", messages=history, tools=[WEATHER], max_tokens=20, tool_choice="none")
    assert second.choices[0].finish_reason in ("stop", "length")
    assert second.choices[0].message.tool_calls is None


def test_required_tool_choice_streams_valid_arguments(client):
    stream = client.chat.completions.create(
        model="m", messages=MESSAGES, tools=[WEATHER], tool_choice="required", max_tokens=400, stream=True,
        temperature=0,
    )
    arguments, names, finish = {}, {}, None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            if delta.function.name:
                names[delta.index] = delta.function.name
            arguments[delta.index] = arguments.get(delta.index, "") + (delta.function.arguments or "")
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and names and set(names.values()) == {"get_weather"}
    for text in arguments.values():
        jsonschema.validate(json.loads(text), WEATHER["function"]["parameters"])


def test_parse_with_a_pydantic_model(client):
    class Forecast(pydantic.BaseModel):
        city: str
        days: int

    parsed = client.chat.completions.parse(
        model="m", messages=MESSAGES, response_format=Forecast, max_tokens=300, temperature=0
    )
    assert isinstance(parsed.choices[0].message.parsed, Forecast)
