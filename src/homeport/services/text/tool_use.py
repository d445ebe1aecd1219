"""Tools on a chat request: validating definitions and tool_choice, and forcing calls.

`tool_choice: "required"` and a named function are enforced by constrained decoding: the output is
held to a JSON call (or list of calls) whose `arguments` match the tool's parameter schema, so the
arguments validate even on a model never trained for tools. `"auto"` leaves the model free and
parses whatever call markup its family uses, except where homeport wrote the tool prompt itself
(the template cannot show tools): there the output is either plain text or such calls
(`guided_grammar`), which is what makes `auto` reliable on small models.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from homeport.engines.base import Grammar
from homeport.errors import InvalidRequestError
from homeport.services.text.conversation import Conversation, FunctionTool, NamedFunction, ToolChoice

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_ANY_OBJECT = {"type": "object"}

# A bound on parallel calls: a small model that keeps adding calls only stops at max_tokens.
MAX_PARALLEL_CALLS = 4


@dataclass(frozen=True)
class ToolPlan:
    tools: tuple[FunctionTool, ...]  # normalised: a description ("" if none) and parameters each
    choice: Literal["none", "auto", "required", "named"]
    forced_name: str | None
    parallel: bool
    legacy: bool = False  # sent as `functions`: answered with `function_call`, as OpenAI did

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tool.name for tool in self.tools)

    @property
    def parses_calls(self) -> bool:
        return self.choice != "none"

    @property
    def forced(self) -> bool:
        return self.choice in ("required", "named")

    def grammar(self) -> Grammar | None:
        if not self.forced:
            return None
        one, many = self._call_schemas()
        # A single call may be written bare: small models close `{...}` far more reliably than `[{...}]`.
        schema = {"anyOf": [one, many]} if self.parallel and self.choice == "required" else one
        return Grammar(kind="json_schema", source=json.dumps(schema))

    def guided_grammar(self) -> Grammar | None:
        """For `auto` under homeport's tool prompt: plain text, or one call (a list of calls too
        when parallel)."""
        if self.choice != "auto":
            return None
        one, many = self._call_schemas()
        schema = {"anyOf": [one, many]} if self.parallel else one
        return Grammar(kind="json_schema", source=json.dumps(schema), or_text=True)

    def _call_schemas(self) -> tuple[dict, dict]:
        calls = [_call_schema(tool) for tool in self.tools if self.forced_name in (None, tool.name)]
        one = calls[0] if len(calls) == 1 else {"anyOf": calls}
        return one, {"type": "array", "items": one, "minItems": 1, "maxItems": MAX_PARALLEL_CALLS}


def _call_schema(tool: FunctionTool) -> dict:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "arguments": tool.parameters or _ANY_OBJECT},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def plan_tools(conversation: Conversation) -> ToolPlan | None:
    """The conversation's tools and how they may be used; None when it has none. Errors name the
    OpenAI fields the adapters map onto (legacy `functions` / `function_call` where they came so)."""
    legacy = conversation.legacy_functions
    tools_param, param = ("functions", "function_call") if legacy else ("tools", "tool_choice")
    choice = conversation.tool_choice
    if not conversation.tools:
        if choice not in (None, "none"):
            raise InvalidRequestError(f"{param} needs tools, and none were given", param=param)
        return None
    normalized = tuple(_normalized(i, tool, tools_param) for i, tool in enumerate(conversation.tools))
    names = [t.name for t in normalized]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise InvalidRequestError(f"tool {duplicate!r} is defined twice", param="tools")
    mode, forced_name = _choice(choice, names, param)
    parallel = conversation.parallel_tool_calls is not False and not legacy
    return ToolPlan(tools=normalized, choice=mode, forced_name=forced_name, parallel=parallel, legacy=legacy)


def _normalized(index: int, tool: FunctionTool, param: str) -> FunctionTool:
    where = f"{param}[{index}].function"
    if not isinstance(tool.name, str) or not _NAME.match(tool.name):
        raise InvalidRequestError("a function name must be 1-64 letters, digits, '_', '-' or '.'", param=f"{where}.name")
    parameters = tool.parameters
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequestError("function parameters must be a JSON schema object", param=f"{where}.parameters")
    return FunctionTool(
        name=tool.name,
        description=tool.description or "",
        parameters=parameters or {"type": "object", "properties": {}},
    )


def _choice(choice: ToolChoice, names: list[str], param: str) -> tuple[str, str | None]:
    if choice is None or choice == "auto":
        return "auto", None
    if choice in ("none", "required"):
        return str(choice), None
    if isinstance(choice, NamedFunction):
        if choice.name in names:
            return "named", choice.name
        raise InvalidRequestError(
            f"{param} names {choice.name!r}, which is not among the tools ({', '.join(names)})", param=param
        )
    raise InvalidRequestError(f"{param} must be none, auto, required or a function", param=param)
