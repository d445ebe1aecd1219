"""What tool-call parsing produces, and the interface every model family's parser offers."""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def dump_arguments(arguments: dict) -> str:
    """The one serialisation of arguments, so streamed fragments and final calls always agree."""
    return json.dumps(arguments, ensure_ascii=False)


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # a JSON object, serialised by dump_arguments
    id: str


@dataclass(frozen=True)
class ParsedOutput:
    content: str | None  # None when the output held tool calls and nothing else
    tool_calls: list[ToolCall]


@dataclass(frozen=True)
class ToolCallDelta:
    """What one streaming step adds to one call, OpenAI-style."""

    index: int
    id: str | None = None  # on the call's first delta
    name: str | None = None  # on the call's first delta, whole
    arguments: str = ""  # a fragment of the arguments JSON


@dataclass(frozen=True)
class StreamDelta:
    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()


class ToolCallStream(Protocol):
    def feed(self, fragment: str) -> StreamDelta: ...

    def finish(self) -> StreamDelta:
        """End of generation: decide whatever was held back."""
        ...

    @property
    def tool_calls(self) -> list[ToolCall]:
        """The calls completed so far, with the ids they were streamed under."""
        ...


class ToolCallParser(Protocol):
    name: str

    def parse(self, text: str, tool_names: Collection[str]) -> ParsedOutput: ...

    def stream(self, tool_names: Collection[str]) -> ToolCallStream: ...
