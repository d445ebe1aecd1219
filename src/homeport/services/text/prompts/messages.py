"""OpenAI chat messages → the plain dicts chat templates iterate over.

Templates written for Hugging Face expect string content, `tool_calls[].function.arguments` as a
mapping (they do `arguments | tojson` or `arguments.items()`), and earlier replies' reasoning in
`reasoning_content` rather than inside the content.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

from homeport.schemas.chat import ChatMessage, TextPart
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


def normalize(messages: list[ChatMessage], *, keep_last_reasoning_inline: bool = False) -> list[dict]:
    """Every message as templates expect it. With `keep_last_reasoning_inline` (continuing the
    last reply), the last message's <think> text stays in its content: that is where it goes on."""
    last = len(messages) - 1
    images = itertools.count()  # image parts become numbered slots (see images.py), in order
    return [
        _normalize(message, images, split_think=not (keep_last_reasoning_inline and index == last))
        for index, message in enumerate(messages)
    ]


def _normalize(message: ChatMessage, images: Iterator[int], *, split_think: bool) -> dict:
    content = message.content
    if isinstance(content, list):
        content = "\n".join(part.text if isinstance(part, TextPart) else slot(next(images)) for part in content)
    normalized: dict[str, Any] = {
        "role": "system" if message.role == "developer" else message.role,
        "content": content or "",
    }
    if message.name:
        normalized["name"] = message.name
    if message.tool_call_id:
        normalized["tool_call_id"] = message.tool_call_id
    if message.role == "assistant":
        reasoning = (message.model_extra or {}).get("reasoning_content")
        if split_think:
            thought, normalized["content"] = split_think_block(normalized["content"])
            reasoning = reasoning or thought
        if isinstance(reasoning, str) and reasoning:
            normalized["reasoning_content"] = reasoning
        if message.tool_calls:
            normalized["tool_calls"] = [_tool_call(call) for call in message.tool_calls]
    return normalized


def split_think_block(content: str) -> tuple[str | None, str]:
    """(reasoning, the rest) of a reply that begins with a closed <think>…</think> block."""
    if THINK_CLOSE not in content:
        return None, content
    thought, _, rest = content.partition(THINK_CLOSE)
    thought = thought.strip()
    thought = thought.removeprefix(THINK_OPEN).strip()
    return (thought or None), rest.lstrip()


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function")
    if not isinstance(function, dict):
        return dict(call)
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError:
            parsed = None
        arguments = JsonDict(parsed) if isinstance(parsed, dict) else arguments  # unparsable: left as sent
    elif isinstance(arguments, dict):
        arguments = JsonDict(arguments)
    return {**call, "function": {**function, "arguments": arguments}}


def split_leading_system(messages: list[dict]) -> tuple[str | None, list[dict]]:
    """(the leading system messages joined, the rest): templates read the system prompt only from
    messages[0]. System messages later in the conversation keep their place."""
    count = 0
    while count < len(messages) and messages[count]["role"] == "system":
        count += 1
    if count == 0:
        return None, messages
    return "\n\n".join(m["content"] for m in messages[:count]), messages[count:]
