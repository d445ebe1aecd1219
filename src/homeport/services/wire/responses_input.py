"""The OpenAI Responses adapter, request side: `input` items (and the stored conversation that
`previous_response_id` names, and the stored items `item_reference`s name) → the chat pipeline's
conversation, tools and output format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from homeport.errors import InvalidRequestError
from homeport.schemas.common import SamplingFields
from homeport.schemas.responses import ResponsesRequest
from homeport.services.ids import stored_id
from homeport.services.text.conversation import (
    Conversation,
    FunctionTool,
    Image,
    Limits,
    Message,
    NamedFunction,
    Part,
    Reasoning,
    Role,
    Text,
    Thinking,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from homeport.services.wire.input_files import check_file_part, file_prompt

Resolve = Callable[[str], dict | None]  # a stored item by its id (ResponseStore.item)


def input_items(body: ResponsesRequest, resolve: Resolve = lambda _: None) -> list[dict]:
    """The request's input as stored items, each with an id (as `input_items` lists them); an
    item_reference is replaced by the stored item it names. Blocking (store look-ups, decoding)."""
    if isinstance(body.input, str):
        return [_message("user", body.input)]
    return [_item(raw, f"input[{i}]", resolve) for i, raw in enumerate(body.input)]


def _message(role: str, content: Any, where: str = "input", raw: dict | None = None) -> dict:
    kind = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        parts = [{"type": kind, "text": content, **({"annotations": []} if kind == "output_text" else {})}]
    elif isinstance(content, list):
        parts = [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]
    else:
        raise InvalidRequestError("a message's content must be a string or a list of parts", param=f"{where}.content")
    return {
        "id": (raw or {}).get("id") or stored_id("msg"),
        "type": "message",
        "role": role,
        "content": parts,
        "status": "completed",
    }


def _part(part: Any, where: str) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        if kind == "output_text":
            return {"type": "output_text", "text": part["text"], "annotations": part.get("annotations") or []}
        return {"type": "input_text", "text": part["text"]}
    if kind == "input_image" and isinstance(part.get("image_url"), str):
        return {"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail") or "auto"}
    if kind == "input_file":
        return check_file_part(part, where)
    raise InvalidRequestError(
        "a content part must be input_text, output_text, input_image (with image_url) or input_file", param=where
    )


def _output_part_text(part: Any, where: str) -> str:
    """A function_call_output part as text: its text, or a text file's (input_file) contents."""
    if not isinstance(part, dict):
        return ""
    if part.get("type") == "input_file":
        return file_prompt(check_file_part(part, where))
    return part.get("text", "")


def _item(raw: Any, where: str, resolve: Resolve) -> dict:
    if not isinstance(raw, dict):
        raise InvalidRequestError("each input item must be an object", param=where)
    kind = raw.get("type")
    if kind is None:  # the spec's item_reference may leave out its type; a message has a role
        kind = "item_reference" if "role" not in raw and "id" in raw else "message"
    if kind == "message":
        role = raw.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequestError(
                "a message's role must be user, assistant, system or developer", param=f"{where}.role"
            )
        return _message(role, raw.get("content"), where, raw)
    if kind == "function_call":
        for field in ("call_id", "name", "arguments"):
            if not isinstance(raw.get(field), str):
                raise InvalidRequestError(f"a function_call needs a string {field}", param=f"{where}.{field}")
        return {
            "id": raw.get("id") or stored_id("fc"),
            "type": "function_call",
            "call_id": raw["call_id"],
            "name": raw["name"],
            "arguments": raw["arguments"],
            "status": "completed",
        }
    if kind == "function_call_output":
        output = raw.get("output")
        if isinstance(output, list):
            output = "\n".join(_output_part_text(p, f"{where}.output[{j}]") for j, p in enumerate(output))
        if not isinstance(raw.get("call_id"), str) or not isinstance(output, str):
            raise InvalidRequestError("a function_call_output needs call_id and output strings", param=where)
        return {
            "id": raw.get("id") or stored_id("fco"),
            "type": "function_call_output",
            "call_id": raw["call_id"],
            "output": output,
            "status": "completed",
        }
    if kind == "reasoning":
        return {
            "id": raw.get("id") or stored_id("rs"),
            "type": "reasoning",
            "summary": raw.get("summary") or [],
            "content": raw.get("content") or [],
        }
    if kind == "item_reference":
        ref = raw.get("id")
        if not isinstance(ref, str) or not ref:
            raise InvalidRequestError("an item_reference needs the id of a stored item", param=f"{where}.id")
        found = resolve(ref)
        if found is None:
            raise InvalidRequestError(
                f"no stored item has the id {ref!r} (only items of stored responses can be referenced)",
                param=f"{where}.id",
            )
        return found
    raise InvalidRequestError(f"input items of type {kind!r} are not supported", param=f"{where}.type")


def to_conversation(body: ResponsesRequest, conversation: list[dict]) -> Conversation:
    """The chat pipeline's conversation for this turn; `conversation`: every item so far, this input last."""
    messages: list[_Draft] = [_Draft("system", [Text(body.instructions)])] if body.instructions else []
    reasoning: list[str] = []
    for item in conversation:
        kind = item["type"]
        if kind == "reasoning":
            reasoning += [
                p.get("text", "") for p in [*item.get("content", []), *item.get("summary", [])] if isinstance(p, dict)
            ]
        elif kind == "function_call":
            last = messages[-1] if messages else None
            if last is None or last.role != "assistant":
                last = _Draft("assistant", [])
                messages.append(last)
            last.parts.append(ToolCall(item["call_id"], item["name"], item["arguments"]))
        elif kind == "function_call_output":
            messages.append(_Draft("tool", [ToolResult(item["call_id"], item["output"])]))
        else:
            messages.append(_chat_message(item))
        if messages and messages[-1].role == "assistant" and reasoning:
            # Reasoning items belong to the assistant turn after them (after one: they replace its own).
            messages[-1].reasoning = "\n".join(reasoning)
            reasoning = []
    if not any(m.role != "system" for m in messages):
        raise InvalidRequestError("input must hold at least one message", param="input")
    effort = (body.reasoning or {}).get("effort")
    sampling = {name: getattr(body, name) for name in ("model", "temperature", "top_p") if getattr(body, name) is not None}
    return Conversation(
        messages=tuple(m.message() for m in messages),
        tools=tuple(_tool(tool, i) for i, tool in enumerate(body.tools or [])),
        tool_choice=_tool_choice(body.tool_choice) if body.tool_choice is not None else None,
        parallel_tool_calls=body.parallel_tool_calls,
        limits=Limits(max_tokens=body.max_output_tokens),
        thinking=Thinking() if effort is None else Thinking(enabled=effort != "none", effort=effort),
        sampling=SamplingFields.model_validate({**sampling, "response_format": _response_format(body.text)}),
    )


@dataclass
class _Draft:
    """A message being gathered from items (a reply's calls come as items of their own)."""

    role: str  # the item's (developer: a system message)
    parts: list[Part]
    reasoning: str | None = None

    def message(self) -> Message:
        role: Role = "system" if self.role == "developer" else self.role  # type: ignore[assignment]
        return Message(role, ((Reasoning(self.reasoning),) if self.reasoning else ()) + tuple(self.parts))


def _chat_message(item: dict) -> _Draft:
    role = item["role"]
    parts: list[Part] = []
    for part in item["content"]:
        if part["type"] == "input_image":
            parts.append(Image(part["image_url"], part.get("detail")))
        elif part["type"] == "input_file":
            parts.append(Text(file_prompt(part)))
        else:
            parts.append(Text(part["text"]))
    if role == "assistant":  # a reply's text is one piece (its images are not shown back to the model)
        text = "".join(p.text for p in parts if isinstance(p, Text))
        return _Draft("assistant", [Text(text)] if text else [])
    return _Draft(role, parts)


def _tool(tool: dict, index: int) -> FunctionTool:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise InvalidRequestError(
            f"tool type {kind!r} is a built-in tool homeport cannot run; only function tools are supported",
            param=f"tools[{index}].type",
        )
    name = tool.get("name")
    return FunctionTool(
        name=name if isinstance(name, str) else "",  # not a string: refused by plan_tools, naming it
        description=tool.get("description") or "",
        parameters=tool.get("parameters"),
    )


def _tool_choice(choice: str | dict) -> ToolChoice:
    if isinstance(choice, str):
        return choice
    if choice.get("type") == "function":
        return NamedFunction(choice.get("name"))
    raise InvalidRequestError("tool_choice must be auto, none, required or {type: function, name}", param="tool_choice")


def _response_format(text: dict | None) -> dict | None:
    fmt = (text or {}).get("format")
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    if fmt.get("type") == "json_schema":
        schema = {"name": fmt.get("name"), "schema": fmt.get("schema"), "strict": fmt.get("strict")}
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequestError("text.format.type must be text, json_object or json_schema", param="text.format.type")


def echoed_tools(body: ResponsesRequest) -> list[dict]:
    """The tools as the response object lists them."""
    return [
        {
            "type": "function",
            "name": t.get("name"),
            "description": t.get("description"),
            "parameters": t.get("parameters"),
            "strict": t.get("strict", True),
        }
        for t in body.tools or []
    ]
