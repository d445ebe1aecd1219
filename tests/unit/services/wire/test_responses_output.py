"""The Responses adapter's output side on scripted neutral events: every event and the final
response match the vendored OpenAI spec, in order, with increasing sequence numbers."""

from __future__ import annotations

import pytest

from homeport.schemas.responses import ResponsesRequest
from homeport.services.text.events import (
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReport,
)
from homeport.services.wire.responses_output import ResponseAssembler, new_response
from support.openapi import SpecValidator

SPEC = SpecValidator()
# Each stream event's own schema, found by the event name the spec gives it (anyOf errors say little).
EVENT_SCHEMAS = {
    schema["x-oaiMeta"]["name"]: name
    for name, schema in SPEC._schemas.items()
    if name.startswith("Response") and name.endswith("Event") and "name" in schema.get("x-oaiMeta", {})
}


def validate_event(data: dict) -> None:
    SPEC.validate(EVENT_SCHEMAS[data["type"]], data)
    SPEC.validate("ResponseStreamEvent", data)


def _run(neutral, **request):
    body = ResponsesRequest.model_validate({"input": "hi", **request})
    assembler = ResponseAssembler(new_response(body, "model-x", "in_progress"))
    events = assembler.start()
    for event in neutral:
        events += assembler.feed(event)
    return assembler.response, events


@pytest.mark.parametrize(
    "neutral, status",
    [
        ([ReasoningDelta("think"), TextDelta("Hel"), TextDelta("lo"), Finish("stop"), UsageReport(5, 3)], "completed"),
        ([TextDelta("cut"), Finish("length"), UsageReport(5, 1)], "incomplete"),
        (
            [
                ToolCallStarted(0, "call_1", "f"),
                ToolCallArgumentsDelta(0, '{"a":'),
                ToolCallArgumentsDelta(0, "1}"),
                ToolCallDone(0, "call_1", "f", '{"a":1}'),
                Finish("tool_calls"),
                UsageReport(5, 4),
            ],
            "completed",
        ),
    ],
)
def test_events_and_response_follow_the_spec(neutral, status):
    response, events = _run(neutral, tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}])
    SPEC.validate("Response", response)
    for _, data in events:
        validate_event(data)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert response["status"] == status
    assert events[-1][0] == f"response.{status}"


def test_text_and_call_items_are_assembled():
    response, events = _run(
        [
            TextDelta("a"),
            ToolCallStarted(0, "c", "f"),
            ToolCallArgumentsDelta(0, "{}"),
            Finish("tool_calls"),
            UsageReport(1, 1),
        ]
    )
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]
    assert response["output"][0]["content"][0]["text"] == "a"
    assert response["output"][1]["arguments"] == "{}" and response["output"][1]["call_id"] == "c"
    added = [d["output_index"] for name, d in events if name == "response.output_item.added"]
    assert added == [0, 1]


def test_a_failed_response_follows_the_spec():
    body = ResponsesRequest.model_validate({"input": "hi"})
    assembler = ResponseAssembler(new_response(body, "m", "in_progress"))
    events = assembler.start() + assembler.feed(TextDelta("x")) + assembler.fail("server_error", "boom")
    for _, data in events:
        validate_event(data)
    SPEC.validate("Response", assembler.response)
