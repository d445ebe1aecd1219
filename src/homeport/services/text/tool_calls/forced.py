"""Streaming calls made under a forced tool_choice: the grammar guarantees the JSON, so the
arguments can stream as they are generated, with nothing ever to take back.

The output is `{"name": N, "arguments": {...}}`, or a list of such objects (parallel calls), as
`tool_use.ToolPlan.grammar` constrains it; the name comes before the arguments in every call.
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
        return self._whole.parse(text, tool_names)

    def stream(self, tool_names: Collection[str]) -> ForcedCallStream:
        return ForcedCallStream()


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
