"""The Anthropic adapter on scripted neutral events and requests: stream events and the message
validate with the `anthropic` SDK's own types (strict), requests map onto the chat pipeline."""

from __future__ import annotations

import json

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from homeport.errors import HomeportError, InvalidRequestError, ServiceUnavailableError
from homeport.schemas.anthropic import MessagesRequest
from homeport.services.text.conversation import Image, Reasoning, Text, ToolCall, ToolResult
from homeport.services.text.events import (
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
    UsageReport,
)
from homeport.services.text.prompts.messages import normalize
from homeport.services.wire.anthropic import MessageAssembler, error_envelope, thinking_signature, to_conversation

EVENTS = pydantic.TypeAdapter(RawMessageStreamEvent)


def _assemble(neutral):
    assembler = MessageAssembler("model-x", 7)
    pairs = assembler.start()
    for event in neutral:
        pairs += assembler.feed(event)
    return assembler.message, pairs


def test_thinking_text_and_tool_use_stream_as_anthropic_does():
    message, pairs = _assemble(
        [
            ReasoningDelta("hmm"),
            TextDelta("Let me check."),
            ToolCallStarted(0, "toolu_1", "get_weather"),
            ToolCallArgumentsDelta(0, '{"city": '),
            ToolCallArgumentsDelta(0, '"Paris"}'),
            ToolCallDone(0, "toolu_1", "get_weather", '{"city": "Paris"}'),
            Finish("tool_calls"),
            UsageReport(7, 9, cached_tokens=4),
        ]
    )
    for name, data in pairs:
        assert data["type"] == name
        if name != "ping":
            EVENTS.validate_python(data, strict=True)
    Message.model_validate(message, strict=True)
    names = [name for name, _ in pairs]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",  # the thinking block's signature_delta
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [b["type"] for b in message["content"]] == ["thinking", "text", "tool_use"]
    assert pairs[4][1]["delta"] == {"type": "signature_delta", "signature": message["content"][0]["signature"]}
    assert message["content"][0]["signature"] == thinking_signature("hmm") != thinking_signature("hmm!")
    assert message["content"][2]["input"] == {"city": "Paris"}
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 3,
        "output_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
    }


@pytest.mark.parametrize(
    "finish, reason",
    [(Finish("stop"), "end_turn"), (Finish("length"), "max_tokens"), (Finish("stop", "END"), "stop_sequence")],
)
def test_stop_reasons(finish, reason):
    message, _ = _assemble([TextDelta("x"), finish, UsageReport(1, 1)])
    assert message["stop_reason"] == reason
    Message.model_validate(message, strict=True)


def test_request_maps_onto_the_chat_pipeline():
    body = MessagesRequest.model_validate(
        {
            "model": "m",
            "max_tokens": 200,
            "system": [{"type": "text", "text": "Be brief."}],
            "stop_sequences": ["END"],
            "top_k": 5,
            "thinking": {"type": "enabled", "budget_tokens": 100},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    ],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "t", "signature": ""},
                        {"type": "tool_use", "id": "u1", "name": "f", "input": {"a": 1}},
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "u1", "content": "bad", "is_error": True}],
                },
            ],
        }
    )
    chat = to_conversation(body)
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    assert chat.messages[1].parts == (Text("hi"), Image("data:image/png;base64,AAAA"))
    reasoning, call = chat.messages[2].parts
    assert isinstance(call, ToolCall) and (call.id, call.name) == ("u1", "f") and json.loads(call.arguments) == {"a": 1}
    assert reasoning == Reasoning("t", "")
    assert chat.messages[3].parts == (ToolResult("u1", "bad", is_error=True),)
    template = normalize(chat.messages)
    assert template[2]["reasoning_content"] == "t"
    assert template[3]["content"] == "Error: bad" and template[3]["tool_call_id"] == "u1"
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.limits.max_tokens == 200 and chat.limits.stop_strings() == ("END",)
    assert chat.sampling.top_k == 5 and chat.thinking.enabled


def test_server_tools_are_refused_by_name():
    body = MessagesRequest.model_validate(
        {
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        }
    )
    with pytest.raises(InvalidRequestError) as refused:
        to_conversation(body)
    assert refused.value.param == "tools[0].type"


@pytest.mark.parametrize(
    "error, status, kind",
    [
        (InvalidRequestError("x"), 400, "invalid_request_error"),
        (ServiceUnavailableError("busy"), 529, "overloaded_error"),
        (HomeportError("boom"), 500, "api_error"),
    ],
)
def test_error_envelope(error, status, kind):
    assert error_envelope(error) == (status, {"type": "error", "error": {"type": kind, "message": error.message}})


def test_a_thinking_budget_must_fit_under_max_tokens():
    body = MessagesRequest.model_validate(
        {
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "x"}],
            "thinking": {"type": "enabled", "budget_tokens": 50},
        }
    )
    with pytest.raises(InvalidRequestError) as refused:
        to_conversation(body)
    assert refused.value.param == "thinking.budget_tokens"


def test_signed_thinking_blocks_in_history_are_accepted():
    thinking = {"type": "thinking", "thinking": "I reckon 4.", "signature": thinking_signature("I reckon 4.")}
    body = MessagesRequest.model_validate(
        {
            "max_tokens": 50,
            "messages": [
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": [thinking, {"type": "text", "text": "4"}]},
                {"role": "user", "content": "And 3+3?"},
            ],
        }
    )
    conversation = to_conversation(body)
    assert conversation.messages[1].parts == (Reasoning("I reckon 4.", thinking["signature"]), Text("4"))
    assistant = normalize(conversation.messages)[1]
    assert assistant["reasoning_content"] == "I reckon 4." and assistant["content"] == "4"
