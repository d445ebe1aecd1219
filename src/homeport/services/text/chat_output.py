"""The model's raw chat output → OpenAI's assistant message: reasoning, content and tool calls,
whole or as stream deltas."""

from __future__ import annotations

from homeport.services.text.reasoning import ReasoningStream, split_reasoning
from homeport.services.text.tool_calls import ToolCall, ToolCallParser, ToolCallStream
from homeport.services.text.tool_calls.forced import ForcedCallParser
from homeport.services.text.tool_use import ToolPlan


def _call_dict(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def parser_for_plan(plan: ToolPlan | None, model_parser: ToolCallParser) -> ToolCallParser | None:
    if plan is None or not plan.parses_calls:
        return None
    return ForcedCallParser() if plan.forced else model_parser


def assemble_message(
    raw: str, *, starts_in_reasoning: bool, plan: ToolPlan | None, parser: ToolCallParser | None
) -> tuple[dict, bool]:
    """The assistant message for a whole output, and whether it called tools."""
    split = split_reasoning(raw, starts_in_reasoning=starts_in_reasoning)
    content: str | None = split.content
    calls: list[ToolCall] = []
    if parser is not None and plan is not None:
        parsed = parser.parse(split.content, plan.names)
        content, calls = parsed.content, parsed.tool_calls
        if not plan.parallel:
            calls = calls[:1]
    message: dict = {"role": "assistant", "content": content if content or not calls else None, "refusal": None}
    if split.reasoning:
        # Clients read one name or the other; both carry the same text.
        message["reasoning_content"] = message["reasoning"] = split.reasoning
    if calls and plan is not None and plan.legacy:
        message["function_call"] = {"name": calls[0].name, "arguments": calls[0].arguments}
    elif calls:
        message["tool_calls"] = [_call_dict(call) for call in calls]
    return message, bool(calls)


def finish_reason_for(called_tools: bool, plan: ToolPlan | None, generated: str) -> str:
    if not called_tools:
        return generated
    return "function_call" if plan is not None and plan.legacy else "tool_calls"


class DeltaAssembler:
    """Feeds generated text through reasoning separation and tool-call parsing; returns the
    OpenAI `delta` objects to send for it."""

    def __init__(self, *, starts_in_reasoning: bool, plan: ToolPlan | None, parser: ToolCallParser | None) -> None:
        self._reasoning = ReasoningStream(starts_in_reasoning=starts_in_reasoning)
        self._calls: ToolCallStream | None = parser.stream(plan.names) if parser and plan else None
        self._parallel = plan.parallel if plan else True
        self._legacy = plan.legacy if plan else False
        self.called_tools = False

    def feed(self, text: str) -> list[dict]:
        return self._deltas(*self._reasoning.feed(text), final=False)

    def finish(self) -> list[dict]:
        return self._deltas(*self._reasoning.finish(), final=True)

    def _deltas(self, reasoning: str, content: str, *, final: bool) -> list[dict]:
        deltas: list[dict] = []
        if reasoning:
            deltas.append({"reasoning_content": reasoning, "reasoning": reasoning})
        if self._calls is None:
            if content:
                deltas.append({"content": content})
            return deltas
        parts = [self._calls.feed(content)] if content else []
        if final:
            parts.append(self._calls.finish())
        for part in parts:
            if part.content:
                deltas.append({"content": part.content})
            calls = [c for c in part.tool_calls if self._parallel or c.index == 0]
            if calls:
                self.called_tools = True
                for call in calls:
                    # As OpenAI streams them: the id and name first, then the arguments.
                    opening, arguments = self._call_deltas(call)
                    for item in (opening, arguments):
                        if item is not None:
                            deltas.append({"function_call": item["function"]} if self._legacy else {"tool_calls": [item]})
        return deltas

    @staticmethod
    def _call_deltas(delta) -> tuple[dict | None, dict | None]:
        """(the opening delta with id and name and empty arguments, the arguments delta)."""
        opening = None
        if delta.id is not None or delta.name is not None:
            opening = {"index": delta.index, "function": {"arguments": ""}}
            if delta.id is not None:
                opening.update(id=delta.id, type="function")
            if delta.name is not None:
                opening["function"]["name"] = delta.name
        arguments = {"index": delta.index, "function": {"arguments": delta.arguments}} if delta.arguments else None
        return opening, arguments
