"""Tools for templates that cannot show them: homeport's own tool prompt.

Whether a template shows tools is found by rendering it with a probe (a tool, a call and a result
under names no real conversation uses) and looking for them in the text; the answer is cached per
template source. Where the template shows nothing, homeport writes the tools into the system
message with the exact reply format (the generic JSON call the generic parser reads and the
guided grammar enforces), and earlier calls and results into the history as plain text. A
template's own tool rendering always wins where it exists (`--tool-prompt auto`).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from homeport.errors import ChatTemplateError
from homeport.services.text.prompts.messages import JsonDict

_PROBE_TOOL = "homeport_probe_tool_5b1e"
_PROBE_RESULT = "homeport-probe-result-5b1e"
_PROBE_CALL_ID = "call_homeportprobe"
_PROBE_ARGUMENT = "homeport-probe-argument-5b1e"


@dataclass(frozen=True)
class ToolRendering:
    """What a template writes of tools: their definitions, assistant calls, tool results."""

    tools: bool
    calls: bool
    results: bool


# (messages, tools, add_generation_prompt) → the rendered text; raises ChatTemplateError.
Render = Callable[[list[dict], list[dict] | None, bool], str]


class ToolRenderingCache:
    """Probes each template once (a prompt is built per request). Bounded: requests may send
    templates of their own (instruction_template_str)."""

    def __init__(self, size: int = 64) -> None:
        self._known: OrderedDict[str, ToolRendering] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, source: str, render: Render) -> ToolRendering:
        with self._lock:
            known = self._known.get(source)
            if known is not None:
                self._known.move_to_end(source)
                return known
        known = probe(render)
        with self._lock:
            self._known[source] = known
            while len(self._known) > self._size:
                self._known.popitem(last=False)
        return known


def probe(render: Render) -> ToolRendering:
    tool = {
        "type": "function",
        "function": {"name": _PROBE_TOOL, "description": "", "parameters": {"type": "object", "properties": {}}},
    }
    arguments = JsonDict(probe=_PROBE_ARGUMENT)
    call = {"id": _PROBE_CALL_ID, "type": "function", "function": {"name": _PROBE_TOOL, "arguments": arguments}}
    user = {"role": "user", "content": "hello"}
    try:
        shows_tools = _PROBE_TOOL in render([user], [tool], True)
    except ChatTemplateError:
        shows_tools = False
    history = [
        user,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": _PROBE_RESULT, "tool_call_id": _PROBE_CALL_ID, "name": _PROBE_TOOL},
    ]
    try:
        text = render(history, [tool] if shows_tools else None, True)
    except ChatTemplateError:
        text = ""
    calls = _PROBE_TOOL in text or _PROBE_ARGUMENT in text
    return ToolRendering(tools=shows_tools, calls=calls, results=_PROBE_RESULT in text)


def tool_section(tools: list[dict], *, parallel: bool, forced_name: str | None, required: bool) -> str:
    """The system-message text that shows the tools and how to call one (short: small models
    have small contexts)."""
    listed = "\n".join(json.dumps(_shown(tool["function"]), ensure_ascii=False) for tool in tools)
    lines = [
        "# Tools",
        "You can call these tools (parameters: the JSON schema of their arguments):",
        listed,
        'To call a tool, reply with only this JSON: {"name": "<tool name>", "arguments": {<its arguments>}}',
        "For example: " + json.dumps(_example(tools[0]["function"]), ensure_ascii=False),
    ]
    if parallel:
        lines.append("To call several tools at once, reply with a JSON list of such objects.")
    if forced_name is not None:
        lines.append(f"Call {forced_name} now.")
    elif required:
        lines.append("Call a tool now.")
    else:
        lines.append("When a tool can answer, call it rather than guessing. Otherwise answer in plain text.")
    return "\n".join(lines)


def _example(function: dict) -> dict:
    """A call of `function` with a placeholder for each required argument."""
    parameters = function.get("parameters")
    parameters = parameters if isinstance(parameters, dict) else {}
    properties = parameters.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = parameters.get("required")
    placeholders = {"string": "...", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}
    arguments = {}
    for name in required if isinstance(required, list) else []:
        if isinstance(name, str):
            schema = properties.get(name)
            kind = schema.get("type") if isinstance(schema, dict) else None
            arguments[name] = placeholders.get(kind, "...") if isinstance(kind, str) else "..."
    return {"name": function["name"], "arguments": arguments}


def _shown(function: dict) -> dict:
    shown = {"name": function["name"]}
    if function.get("description"):
        shown["description"] = function["description"]
    shown["parameters"] = function.get("parameters") or {"type": "object", "properties": {}}
    return shown


def with_tool_section(system: str | None, section: str) -> str:
    return f"{system}\n\n{section}" if system else section


def history_as_text(history: list[dict], *, calls: bool, results: bool) -> list[dict]:
    """The history with what the template cannot show written as text: assistant calls in the
    generic JSON form (`calls`), tool results as a user turn naming the tool (`results`).
    Consecutive results (parallel calls) make one turn: many templates need roles to alternate."""
    names: dict[str, str] = {}  # call id → function name, to name a result that has no `name`
    adapted: list[dict] = []
    for message in history:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id"):
                names[call["id"]] = str(_function(call).get("name", ""))
        if calls and message.get("tool_calls"):
            adapted.append(_call_text(message))
        elif results and message["role"] == "tool":
            name = message.get("name") or names.get(message.get("tool_call_id", ""), "") or "a tool"
            line = f"Result of {name}: {message['content']}"
            previous = adapted[-1] if adapted else None
            if previous is not None and previous.get("_tool_results"):
                previous["content"] += "\n" + line
            else:
                adapted.append({"role": "user", "content": line, "_tool_results": True})
        else:
            adapted.append(message)
    return [{k: v for k, v in m.items() if k != "_tool_results"} for m in adapted]


def _function(call: object) -> dict:
    """A history call's function (OpenAI nests it; some clients send it bare), or {}."""
    if not isinstance(call, dict):
        return {}
    function = call.get("function", call)
    return function if isinstance(function, dict) else {}


def _call_text(message: dict) -> dict:
    shown = []
    for call in message["tool_calls"]:
        function = _function(call)
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                pass  # unparsable: shown as the string it is
        shown.append({"name": function.get("name", ""), "arguments": arguments if arguments is not None else {}})
    calls = json.dumps(shown[0] if len(shown) == 1 else shown, ensure_ascii=False)
    content = f"{message['content']}\n{calls}" if message.get("content") else calls
    return {k: v for k, v in {**message, "content": content}.items() if k != "tool_calls"}
