"""The Responses adapter's request side: input items → stored items and the chat conversation."""

from __future__ import annotations

import base64

import pytest

from homeport.errors import InvalidRequestError
from homeport.schemas.responses import ResponsesRequest
from homeport.services.text.conversation import Image, NamedFunction, Reasoning, Text, ToolCall, ToolResult
from homeport.services.wire.responses_input import input_items, to_conversation


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
    chat = to_conversation(body, items)
    assert [m.role for m in chat.messages] == ["system", "user", "assistant", "tool"]
    assert chat.messages[1].parts == (Text("hi"), Image("data:image/png;base64,AA", "auto"))
    assert chat.messages[2].parts == (Reasoning("ponder"), ToolCall("c1", "f", "{}"))
    assert chat.messages[3].parts == (ToolResult("c1", "42"),)
    assert chat.tool_choice == NamedFunction("f")
    assert chat.sampling.response_format["type"] == "json_schema" and chat.limits.max_tokens == 7
    assert chat.thinking.effort == "low" and chat.thinking.enabled


def test_a_string_input_is_one_user_message():
    items = input_items(_body(input="hello"))
    assert items[0]["role"] == "user" and items[0]["content"] == [{"type": "input_text", "text": "hello"}]


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
        ({"input": [{"type": "computer_call"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0].file_data"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]},
         "input[0].content[0].file_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "https://x/a.txt"}]}]},
         "input[0].content[0].file_url"),
        ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "%%%"}]}]},
         "input[0].content[0].file_data"),
        ({"input": [{"type": "item_reference", "id": "msg_unknown"}]}, "input[0].id"),
        ({"input": [{"type": "item_reference"}]}, "input[0].id"),
        ({"input": [{"type": "function_call", "call_id": "c", "name": "f"}]}, "input[0].arguments"),
        ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ],
)
def test_bad_input_names_the_field(fields, param):
    body = _body(**fields)
    with pytest.raises(InvalidRequestError) as refused:
        to_conversation(body, input_items(body))
    assert refused.value.param == param


def _file(data: str, filename: str = "notes.txt") -> ResponsesRequest:
    part = {"type": "input_file", "filename": filename, "file_data": data}
    return _body(input=[{"role": "user", "content": [part, {"type": "input_text", "text": "Summarize."}]}])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    "data",
    [f"data:text/plain;base64,{_b64(b'line one')}", _b64(b"line one"), "data:text/plain,line%20one",
     f"data:application/octet-stream;base64,{_b64(b'line one')}"],
)
def test_a_text_file_becomes_its_text_under_its_name(data):
    body = _file(data)
    items = input_items(body)
    assert items[0]["content"][0] == {"type": "input_file", "filename": "notes.txt", "file_data": data}
    message = to_conversation(body, items).messages[0]
    assert message.parts[0].text == '<file name="notes.txt">\nline one\n</file>'
    assert message.parts[1].text == "Summarize."


@pytest.mark.parametrize(
    "data, filename, says",
    [
        (f"data:application/pdf;base64,{_b64(b'%PDF-1.4 ...')}", "paper.pdf", "PDF"),
        (_b64(b"%PDF-1.7 ..."), "paper", "PDF"),
        (f"data:image/png;base64,{_b64(b'PNG')}", "x.png", "binary"),
        (_b64(bytes(range(256))), "blob.bin", "binary"),
    ],
)
def test_pdf_and_binary_files_are_refused_by_name(data, filename, says):
    with pytest.raises(InvalidRequestError) as refused:
        input_items(_file(data, filename))
    assert refused.value.param == "input[0].content[0].file_data" and says in refused.value.message


def test_an_item_reference_is_the_stored_item_it_names():
    stored = {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed",
              "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}
    # The second reference leaves out its type, as the spec allows.
    body = _body(input=[{"type": "item_reference", "id": "msg_1"}, {"id": "msg_1"}, {"role": "user", "content": "Why?"}])
    items = input_items(body, {"msg_1": stored}.get)
    assert items[:2] == [stored, stored]
    assert [m.role for m in to_conversation(body, items).messages] == ["assistant", "assistant", "user"]


def test_a_function_call_output_may_return_a_text_file():
    part = {"type": "input_file", "filename": "out.csv", "file_data": f"data:text/csv;base64,{_b64(b'a,b')}"}
    body = _body(input=[{"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "Done."}, part]}])
    assert input_items(body)[0]["output"] == 'Done.\n<file name="out.csv">\na,b\n</file>'
