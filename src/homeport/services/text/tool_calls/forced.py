"""Streaming calls made under a grammar: the grammar guarantees the JSON, so the arguments can
stream as they are generated, with nothing ever to take back.

The output is `{"name": N, "arguments": {...}}`, or a list of such objects (parallel calls), as
`tool_use.ToolPlan.grammar` constrains it; the name comes before the arguments in every call.
Under `guided_grammar` (`auto` with homeport's tool prompt) it may instead be plain text, which
the grammar keeps from beginning like JSON: the first character tells which it is.

A generation cut short (max_tokens) keeps the calls it completed; the unfinished one is dropped
from the whole message (a stream has already sent its beginning, as OpenAI's would), and the
markup never becomes content.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection

from homeport.services.text.tool_calls.base import (
    ParsedOutput,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    new_call_id,
)
from homeport.services.text.tool_calls.detect import parser_by_name

_CALL_HEAD = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*')


class ForcedCallParser:
    name = "forced"

    def __init__(self) -> None:
        self._whole = parser_by_name("generic")

    def parse(self, text: str, tool_names: Collection[str]) -> ParsedOutput:
        parsed = self._whole.parse(text, tool_names)
        if parsed.tool_calls:
            return parsed
        stream = ForcedCallStream()  # cut short: the calls completed before the cut
        stream.feed(text)
        return ParsedOutput(content=None, tool_calls=stream.tool_calls)

    def stream(self, tool_names: Collection[str]) -> ForcedCallStream:
        return ForcedCallStream()


class GuidedCallParser:
    """`auto` under the guided grammar: a reply that begins like JSON is calls, any other is text."""

    name = "guided"

    def parse(self, text: str, tool_names: Collection[str]) -> ParsedOutput:
        if text.lstrip()[:1] in ("{", "["):
            return ForcedCallParser().parse(text, tool_names)
        return ParsedOutput(content=text, tool_calls=[])

    def stream(self, tool_names: Collection[str]) -> GuidedCallStream:
        return GuidedCallStream()


class GuidedCallStream:
    def __init__(self) -> None:
        self._calls: ForcedCallStream | None = None  # decided: calls
        self._text = False  # decided: text
        self._held = ""  # white space before the first character

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self._calls.tool_calls if self._calls is not None else []

    def feed(self, fragment: str) -> StreamDelta:
        if self._calls is not None:
            return self._calls.feed(fragment)
        if self._text:
            return StreamDelta(content=fragment)
        self._held += fragment
        first = self._held.lstrip()[:1]
        if not first:
            return StreamDelta()
        held, self._held = self._held, ""
        if first in ("{", "["):
            self._calls = ForcedCallStream()
            return self._calls.feed(held)
        self._text = True
        return StreamDelta(content=held)

    def finish(self) -> StreamDelta:
        held, self._held = self._held, ""
        return StreamDelta(content=held)


class ForcedCallStream:
    def __init__(self) -> None:
        self._text = ""
        self._pos = 0  # everything before this has been handled
        self._calls: list[ToolCall] = []
        self._current: dict | None = None  # the call whose arguments are streaming
        self._depth = 0
        self._in_string = False
        self._escaped = False

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, fragment: str) -> StreamDelta:
        self._text += fragment
        deltas: list[ToolCallDelta] = []
        while True:
            if self._current is None:
                head = _CALL_HEAD.search(self._text, self._pos)
                if head is None:
                    break
                self._current = {"id": new_call_id(), "name": _unescape(head.group(1)), "arguments": ""}
                index = len(self._calls)
                deltas.append(ToolCallDelta(index=index, id=self._current["id"], name=self._current["name"]))
                self._pos = head.end()
                self._depth, self._in_string, self._escaped = 0, False, False
            if not self._current["arguments"]:
                # The grammar may put a space before the object, possibly in a later fragment.
                while self._pos < len(self._text) and self._text[self._pos].isspace():
                    self._pos += 1
            start = self._pos
            end = self._scan_arguments()
            piece = self._text[start:end]
            if piece:
                self._current["arguments"] += piece
                deltas.append(ToolCallDelta(index=len(self._calls), arguments=piece))
            self._pos = end
            if self._depth > 0 or not self._current["arguments"]:
                break  # the arguments go on in the next fragment
            current = self._current
            self._calls.append(ToolCall(name=current["name"], arguments=current["arguments"], id=current["id"]))
            self._current = None
        return StreamDelta(tool_calls=tuple(deltas))

    def finish(self) -> StreamDelta:
        return StreamDelta()

    def _scan_arguments(self) -> int:
        """Advances over the arguments object; returns where it (or the text so far) ends."""
        text, i = self._text, self._pos
        while i < len(text):
            char = text[i]
            i += 1
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"':
                    self._in_string = False
            elif char == '"':
                self._in_string = True
            elif char in "{[":
                self._depth += 1
            elif char in "}]":
                self._depth -= 1
                if self._depth == 0:
                    return i
        return i


def _unescape(value: str) -> str:
    return json.loads(f'"{value}"')
