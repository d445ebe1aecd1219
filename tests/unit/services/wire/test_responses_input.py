"""The Responses adapter's request side: input items → stored items and the chat conversation."""

from __future__ import annotations

import pytest

from homeport.errors import InvalidRequestError
from homeport.schemas.responses import ResponsesRequest
from homeport.services.wire.responses_input import input_items, to_chat


def _body(**fields) -> ResponsesRequest:
    return ResponsesRequest.model_validate(fields)


def test_items_become_a_chat_conversation():
    body = _body(
        instructions="Be brief.",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "hi"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                ],
            },
            {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "ponder"}]},
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "42"},
        ],
        tools=[{"type": "function", "name": "f", "parameters": {"type": "object"}}],
        tool_choice={"type": "function", "name": "f"},
        text={"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        max_output_tokens=7,
        reasoning={"effort": "low"},
    )
    items = input_items(body)
    assert all(item["id"] for item in items)
    chat = to_chat(body, items)
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool"]
    assert chat.messages[1].content[1].image_url == {"url": "data:image/png;base64,AA"}
    assert chat.messages[2].tool_calls[0]["function"]["name"] == "f"
    assert chat.messages[2].model_extra["reasoning_content"] == "ponder"
    assert chat.tool_choice == {"type": "function", "function": {"name": "f"}}
    assert chat.response_format["type"] == "json_schema" and chat.max_tokens == 7 and chat.reasoning_effort == "low"


def test_a_string_input_is_one_user_message():
    items = input_items(_body(input="hello"))
    assert items[0]["role"] == "user" and items[0]["content"] == [{"type": "input_text", "text": "hello"}]


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)
def test_bad_input_names_the_field(fields, param):
    body = _body(**fields)
    with pytest.raises(InvalidRequestError) as refused:
        to_chat(body, input_items(body))
    assert refused.value.param == param
