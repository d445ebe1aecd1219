"""The conversation's messages (conversation.py) → the plain dicts chat templates iterate over:
the one place where the pipeline writes OpenAI-style message and tool dicts.

Templates written for Hugging Face expect string content, `tool_calls[].function.arguments` as a
mapping (they do `arguments | tojson` or `arguments.items()`), and earlier replies' reasoning in
`reasoning_content` rather than inside the content.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from homeport.services.text.conversation import FunctionTool, Image, Message, Reasoning, Text, ToolCall, ToolResult
from homeport.services.text.prompts.images import slot

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class JsonDict(dict):
    """Tool-call arguments: a mapping for templates that iterate it, JSON text for those that
    print or concatenate it (the reference API's `_JsonDict`)."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)

    def __add__(self, other: object) -> str:
        if isinstance(other, str):
            return str(self) + other
        return NotImplemented

    def __radd__(self, other: object) -> str:
        if isinstance(other, str):
            return other + str(self)
        return NotImplemented


def normalize(messages: Sequence[Message], *, keep_last_reasoning_inline: bool = False) -> list[dict]:
    """Every message as templates expect it. With `keep_last_reasoning_inline` (continuing the
    last reply), the last message's <think> text stays in its content: that is where it goes on."""
    last = len(messages) - 1
    images = itertools.count()  # image parts become numbered slots (see images.py), in order
    return [
        _normalize(message, images, split_think=not (keep_last_reasoning_inline and index == last))
        for index, message in enumerate(messages)
    ]


def template_tools(tools: Iterable[FunctionTool]) -> list[dict]:
    """Tool definitions as templates read them (OpenAI's `{type: function, function: {...}}`)."""
    return [{"type": "function", "function": _function(tool)} for tool in tools]


def _function(tool: FunctionTool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    return function


def _normalize(message: Message, images: Iterator[int], *, split_think: bool) -> dict:
    pieces: list[str] = []  # the content: text parts and image slots, one per line
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    call_id = None
    for part in message.parts:
        if isinstance(part, Text):
            pieces.append(part.text)
        elif isinstance(part, Image):
            pieces.append(slot(next(images)))
        elif isinstance(part, ToolResult):
            call_id = part.call_id
            pieces.append(_result_text(part, images))
        elif isinstance(part, ToolCall):
            calls.append(_tool_call(part))
        elif isinstance(part, Reasoning):
            reasoning.append(part.text)
    normalized: dict[str, Any] = {"role": message.role, "content": "\n".join(pieces)}
    if message.name:
        normalized["name"] = message.name
    if call_id:
        normalized["tool_call_id"] = call_id
    if message.role == "assistant":
        thought = "\n".join(reasoning) or None
        if split_think:
            split, normalized["content"] = split_think_block(normalized["content"])
            thought = thought or split
        if thought:
            normalized["reasoning_content"] = thought
        if calls:
            normalized["tool_calls"] = calls
    return normalized


def _result_text(result: ToolResult, images: Iterator[int]) -> str:
    content = result.content
    if not isinstance(content, str):
        content = "\n".join(part.text if isinstance(part, Text) else slot(next(images)) for part in content)
    return f"Error: {content}" if result.is_error else content


def split_think_block(content: str) -> tuple[str | None, str]:
    """(reasoning, the rest) of a reply that begins with a closed <think>…</think> block."""
    if THINK_CLOSE not in content:
        return None, content
    thought, _, rest = content.partition(THINK_CLOSE)
    thought = thought.strip()
    thought = thought.removeprefix(THINK_OPEN).strip()
    return (thought or None), rest.lstrip()


def _tool_call(call: ToolCall) -> dict[str, Any]:
    arguments: Any = call.arguments
    try:
        parsed = json.loads(arguments)
    except json.JSONDecodeError:
        parsed = None
    arguments = JsonDict(parsed) if isinstance(parsed, dict) else arguments  # unparsable: left as sent
    shown: dict[str, Any] = {"id": call.id} if call.id is not None else {}
    return {**shown, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def split_leading_system(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """(the leading system messages joined, the rest): templates read the system prompt only from
    messages[0]. System messages later in the conversation keep their place."""
    count = 0
    while count < len(messages) and messages[count]["role"] == "system":
        count += 1
    if count == 0:
        return None, messages
    return "\n\n".join(m["content"] for m in messages[:count]), messages[count:]
