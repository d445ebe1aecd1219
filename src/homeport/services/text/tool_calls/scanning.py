"""One streaming engine for every format: text flows out as content until an opener shows up, then
the format decides whether what follows is tool-call markup.

A format only answers "at the front of this buffer, is there markup, not, or can't tell yet?";
the engine owns buffering, whitespace and deltas. Whole-text parsing is the stream fed at once, so
parse() and stream() cannot disagree; the tests check the answers do not depend on how the text
was cut up.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from homeport.services.text.tool_calls.base import (
    ParsedOutput,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    dump_arguments,
    new_call_id,
)
from homeport.services.text.tool_calls.payloads import Call


class Verdict(enum.Enum):
    WAIT = "wait"  # can't tell until more text arrives (never answered when `final`)
    REJECT = "reject"  # not markup: the opener is ordinary text


@dataclass(frozen=True)
class Markup:
    """The first `length` characters of the buffer are tool-call markup carrying `calls`."""

    length: int
    calls: tuple[Call, ...] = ()


Match = Markup | Verdict


@dataclass(frozen=True)
class Openers:
    """Strings that may begin markup, by where they count; earlier ones are tried first."""

    anywhere: tuple[str, ...] = ()
    at_start: tuple[str, ...] = ()  # only before any visible text (whole-output formats)
    after_call: tuple[str, ...] = ()  # only right after a call (closing tags, separators)


@dataclass
class Context:
    """What a format's match may consult besides the buffer."""

    tool_names: frozenset[str]
    final: bool = False  # no more text will come
    # Scratch for resuming work on the same growing buffer; emptied whenever its front is consumed.
    memo: dict = field(default_factory=dict)


class Format(Protocol):
    name: str
    openers: Openers

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        """`buffer` starts with `opener`."""
        ...


class FormatParser:
    """A ToolCallParser for one Format."""

    def __init__(self, fmt: Format) -> None:
        self.format = fmt
        self.name = fmt.name

    def stream(self, tool_names: Collection[str]) -> FormatStream:
        return FormatStream(self.format, tool_names)

    def parse(self, text: str, tool_names: Collection[str]) -> ParsedOutput:
        stream = self.stream(tool_names)
        content = stream.feed(text).content + stream.finish().content
        calls = stream.tool_calls
        return ParsedOutput(content=None if calls and not content else content, tool_calls=calls)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class FormatStream:
    def __init__(self, fmt: Format, tool_names: Collection[str]) -> None:
        self._format = fmt
        self._ctx = Context(tool_names=frozenset(tool_names))
        self._buffer = ""
        self._calls: list[ToolCall] = []
        # Whitespace after the last visible character: dropped if markup follows (or if only markup
        # came before), else emitted with the next text. Kept apart so that chunking cannot change it.
        self._pending_ws = ""
        self._visible = False  # any non-whitespace content so far
        self._visible_since_call = False
        self._markup_seen = False

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self._calls)

    def feed(self, fragment: str) -> StreamDelta:
        if not self._ctx.tool_names:  # nothing can be a call: pass text straight through
            return StreamDelta(content=fragment)
        self._buffer += fragment
        return self._drain(final=False)

    def finish(self) -> StreamDelta:
        if not self._ctx.tool_names:
            return StreamDelta()
        delta = self._drain(final=True)
        tail = "" if self._calls else self._pending_ws
        self._pending_ws = ""
        return StreamDelta(content=delta.content + tail, tool_calls=delta.tool_calls)

    def _drain(self, final: bool) -> StreamDelta:
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        self._ctx.final = final
        while self._buffer:
            step = self._step(final)
            if step is None:
                break
            self._ctx.memo.clear()
            if isinstance(step, Markup):
                self._buffer = self._buffer[step.length :]
                self._pending_ws = ""
                self._markup_seen = True
                for name, args in step.calls:
                    call = ToolCall(name=name, arguments=dump_arguments(args), id=new_call_id())
                    deltas.append(ToolCallDelta(len(self._calls), call.id, call.name, call.arguments))
                    self._calls.append(call)
                    self._visible_since_call = False
            else:
                text, self._buffer = self._buffer[:step], self._buffer[step:]
                content.append(self._text(text))
        return StreamDelta(content="".join(content), tool_calls=tuple(deltas))

    def _step(self, final: bool) -> Markup | int | None:
        """Markup to consume, a count of characters that are content, or None to wait for more."""
        buffer = self._buffer
        ws = len(buffer) - len(buffer.lstrip())
        if ws:
            return ws
        openers = self._format.openers
        candidates: Sequence[str] = openers.anywhere
        if not self._visible:
            candidates = (*candidates, *openers.at_start)
        if self._calls and not self._visible_since_call:
            candidates = (*candidates, *openers.after_call)
        for opener in candidates:
            if buffer.startswith(opener):
                found = self._format.match(opener, buffer, self._ctx)
                if found is Verdict.WAIT:
                    if final:
                        raise AssertionError(f"{self._format.name} format waited at the end of the text")
                    return None
                if isinstance(found, Markup):
                    return found
            elif not final and opener.startswith(buffer):
                return None  # could still become this opener
        return self._content_length(buffer, final)

    def _content_length(self, buffer: str, final: bool) -> int:
        """Characters from the front that are surely content: up to the next possible opener."""
        cut = len(buffer)
        for opener in self._format.openers.anywhere:
            found = buffer.find(opener, 1)
            if found != -1:
                cut = min(cut, found)
            if not final:
                for size in range(min(len(opener) - 1, len(buffer) - 1), 0, -1):
                    if buffer.endswith(opener[:size]):
                        cut = min(cut, len(buffer) - size)
                        break
        return cut

    def _text(self, text: str) -> str:
        """Content out, holding back a trailing whitespace run (see _pending_ws)."""
        body = text.rstrip()
        if not body:
            self._pending_ws += text
            return ""
        if self._markup_seen and not self._visible:  # text that follows nothing but markup
            self._pending_ws = ""
        out = self._pending_ws + body
        self._pending_ws = text[len(body) :]
        self._visible = self._visible_since_call = True
        return out
