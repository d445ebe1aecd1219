"""The model's raw chat output → neutral events (reasoning, content and tool calls), and the OpenAI
chat adapter's assistant message and stream deltas made from them."""

from __future__ import annotations

from homeport.services.text.events import (
    Event,
    ReasoningDelta,
    TextDelta,
    ToolCallArgumentsDelta,
    ToolCallDone,
    ToolCallStarted,
)
from homeport.services.text.reasoning import ReasoningStream, split_reasoning
from homeport.services.text.tool_calls import ToolCall, ToolCallParser, ToolCallStream
from homeport.services.text.tool_calls.forced import ForcedCallParser, GuidedCallParser
from homeport.services.text.tool_use import ToolPlan


def _call_dict(call: ToolCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def parser_for_plan(plan: ToolPlan | None, model_parser: ToolCallParser, *, guided: bool = False) -> ToolCallParser | None:
    """`guided`: `auto` under the guided grammar (plain text or the forced call format)."""
    if plan is None or not plan.parses_calls:
        return None
    if plan.forced:
        return ForcedCallParser()
    return GuidedCallParser() if guided else model_parser


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
    """A reply cut by max_tokens says `length` even when it completed calls before the cut."""
    if not called_tools or generated == "length":
        return generated
    return "function_call" if plan is not None and plan.legacy else "tool_calls"


class EventAssembler:
    """Feeds generated text through reasoning separation and tool-call parsing; returns the
    neutral events (events.py) it amounts to, as soon as each is certain."""

    def __init__(self, *, starts_in_reasoning: bool, plan: ToolPlan | None, parser: ToolCallParser | None) -> None:
        self._reasoning = ReasoningStream(starts_in_reasoning=starts_in_reasoning)
        self._calls: ToolCallStream | None = parser.stream(plan.names) if parser and plan else None
        self._parallel = plan.parallel if plan else True
        self._open: dict[int, list] = {}  # index -> [id, name, arguments so far]
        self.called_tools = False

    def feed(self, text: str) -> list[Event]:
        return self._events(*self._reasoning.feed(text), final=False)

    def finish(self) -> list[Event]:
        events = self._events(*self._reasoning.finish(), final=True)
        for index, (call_id, name, arguments) in sorted(self._open.items()):
            events.append(ToolCallDone(index=index, id=call_id or "", name=name or "", arguments=arguments))
        self._open.clear()
        return events

    def _events(self, reasoning: str, content: str, *, final: bool) -> list[Event]:
        events: list[Event] = []
        if reasoning:
            events.append(ReasoningDelta(reasoning))
        if self._calls is None:
            if content:
                events.append(TextDelta(content))
            return events
        parts = [self._calls.feed(content)] if content else []
        if final:
            parts.append(self._calls.finish())
        for part in parts:
            if part.content:
                events.append(TextDelta(part.content))
            for call in part.tool_calls:
                if not (self._parallel or call.index == 0):
                    continue
                self.called_tools = True
                # As OpenAI streams them: the id and name first, then the arguments.
                state = self._open.setdefault(call.index, [None, None, ""])
                if call.id is not None or call.name is not None:
                    state[0] = call.id if call.id is not None else state[0]
                    state[1] = call.name if call.name is not None else state[1]
                    events.append(ToolCallStarted(index=call.index, id=call.id, name=call.name))
                if call.arguments:
                    state[2] += call.arguments
                    events.append(ToolCallArgumentsDelta(index=call.index, arguments=call.arguments))
        return events


class DeltaAssembler:
    """The OpenAI chat adapter's stream side: neutral events → the `delta` objects to send."""

    def __init__(self, *, starts_in_reasoning: bool, plan: ToolPlan | None, parser: ToolCallParser | None) -> None:
        self._events = EventAssembler(starts_in_reasoning=starts_in_reasoning, plan=plan, parser=parser)
        self._legacy = plan.legacy if plan else False

    @property
    def called_tools(self) -> bool:
        return self._events.called_tools

    def feed(self, text: str) -> list[dict]:
        return self._deltas(self._events.feed(text))

    def finish(self) -> list[dict]:
        return self._deltas(self._events.finish())

    def _deltas(self, events: list[Event]) -> list[dict]:
        deltas: list[dict] = []
        for event in events:
            if isinstance(event, ReasoningDelta):
                deltas.append({"reasoning_content": event.text, "reasoning": event.text})
            elif isinstance(event, TextDelta):
                deltas.append({"content": event.text})
            elif isinstance(event, (ToolCallStarted, ToolCallArgumentsDelta)):
                item = self._call_delta(event)
                deltas.append({"function_call": item["function"]} if self._legacy else {"tool_calls": [item]})
        return deltas

    @staticmethod
    def _call_delta(event: ToolCallStarted | ToolCallArgumentsDelta) -> dict:
        if isinstance(event, ToolCallArgumentsDelta):
            return {"index": event.index, "function": {"arguments": event.arguments}}
        opening: dict = {"index": event.index, "function": {"arguments": ""}}
        if event.id is not None:
            opening.update(id=event.id, type="function")
        if event.name is not None:
            opening["function"]["name"] = event.name
        return opening
