"""The tool-call markup of each model family, as Formats for the scanning engine.

Each `match` looks only at the front of the buffer and answers the same whether the text arrived
whole or in pieces: it waits while the answer could still change, and never waits when final.
A call is only accepted whole (known name, arguments a JSON object); anything else is left as
content, so malformed or unknown calls stay visible instead of vanishing.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from homeport.services.text.tool_calls.payloads import (
    BROKEN,
    INCOMPLETE,
    bare_start_is_plausible,
    calls_from_json,
    calls_from_json_text,
    calls_from_python_code,
    calls_from_python_list,
    json_end,
    load_json,
    python_end,
    skip_ws,
)
from homeport.services.text.tool_calls.scanning import Context, Markup, Match, Openers, Verdict

WAIT, REJECT = Verdict.WAIT, Verdict.REJECT


# --- shared pieces ---


def _expect(buffer: str, pos: int, literal: str, final: bool) -> bool | Verdict:
    """Whether `literal` is at `pos`; WAIT while the buffer ends inside a possible match."""
    if buffer.startswith(literal, pos):
        return True
    if not final and literal.startswith(buffer[pos:]):
        return WAIT
    return False


def _json_at(buffer: str, pos: int, ctx: Context) -> tuple[Any, int] | Verdict:
    """The JSON object or array (of objects) at `pos` and its end."""
    if pos >= len(buffer):
        return REJECT if ctx.final else WAIT
    opener = buffer[pos]
    if opener not in "{[":
        return REJECT
    inner = skip_ws(buffer, pos + 1)  # reject early what cannot be an object or a list of objects
    if inner < len(buffer) and buffer[inner] not in ('"}' if opener == "{" else "{"):
        return REJECT
    end = json_end(buffer, pos, ctx.memo)
    if end == BROKEN:
        return REJECT
    if end is INCOMPLETE:
        return REJECT if ctx.final else WAIT
    value = load_json(buffer[pos:end])
    return REJECT if value is None else (value, end)


def _json_calls_at(buffer: str, pos: int, ctx: Context, *, bare: bool) -> Match:
    """Markup ending where the call object (or list of them) at `pos` ends."""
    if bare and not bare_start_is_plausible(buffer, pos):
        return REJECT
    found = _json_at(buffer, pos, ctx)
    if isinstance(found, Verdict):
        return found
    value, end = found
    calls = calls_from_json(value, ctx.tool_names, bare=bare)
    return REJECT if calls is None else Markup(end, tuple(calls))


def _until(buffer: str, start: int, ends: tuple[str, ...], ctx: Context) -> tuple[str, int, str] | Verdict:
    """(body, its end, the end marker found or "") for a body closed by the earliest of `ends`.

    At the end of the text an unclosed body runs to the end: generation often stops on the closing
    token itself, and then it never shows up in the text.
    """
    key = ("until", start, ends)
    searched = ctx.memo.get(key, start)  # no end marker begins before this
    hits = [(i, e) for e in ends if (i := buffer.find(e, searched)) != -1]
    if hits:
        index, marker = min(hits)
        return buffer[start:index], index, marker
    if not ctx.final:
        ctx.memo[key] = max(start, len(buffer) - max(map(len, ends)) + 1)
        return WAIT
    return buffer[start:], len(buffer), ""


_FENCED = re.compile(r"```[\w-]*\s*(.*?)\s*```", re.S)


def _unfence(text: str) -> str:
    m = _FENCED.fullmatch(text.strip())
    return m.group(1) if m else text


# --- the families ---


class Hermes:
    """Hermes, Qwen 2.5 and 3: <tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>, one or more."""

    name = "hermes"
    openers = Openers(anywhere=("<tool_call>",))
    _close = "</tool_call>"

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        start = len(opener)
        found = _until(buffer, start, (self._close,), ctx)
        if isinstance(found, Verdict):  # no closing tag yet: only a JSON body is worth waiting for
            first = skip_ws(buffer, start)
            return REJECT if first < len(buffer) and buffer[first] not in "{[" else WAIT
        body, end, marker = found
        calls = calls_from_json_text(body, ctx.tool_names)
        return REJECT if calls is None else Markup(end + len(marker), tuple(calls))


class TaggedJsonList:
    """A marker token, then a JSON list of calls, then maybe a closing token.

    Granite 3.x: <|tool_call|>[{"name": ..., "arguments": {...}}] (ends with the generation).
    Phi-4-mini: <|tool_call|>[{"name": ..., "arguments": {...}}]<|/tool_call|> with the model's own
    template; vLLM's phi-4-mini template asks for functools[...] instead, so both are read.
    """

    def __init__(self, name: str, markers: tuple[str, ...], closers: tuple[str, ...]) -> None:
        self.name = name
        self.openers = Openers(anywhere=markers, after_call=closers)
        self._closers = closers

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        if opener in self._closers:
            return Markup(len(opener))
        return _json_calls_at(buffer, skip_ws(buffer, len(opener)), ctx, bare=False)


class Mistral:
    """[TOOL_CALLS][{"name": ..., "arguments": {...}}] (v3 tokenizers: Mistral 7B v0.3, Nemo, Small
    until 3.1) and [TOOL_CALLS]name[ARGS]{...}, maybe with [CALL_ID]id (v11+: Small 3.2, Magistral,
    Devstral), one [TOOL_CALLS] per call."""

    name = "mistral"
    openers = Openers(anywhere=("[TOOL_CALLS]",))
    _name = re.compile(r"[\w.\-]+")
    _call_id = re.compile(r"\w*")

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        pos = skip_ws(buffer, len(opener))
        if pos == len(buffer):
            return REJECT if ctx.final else WAIT
        if buffer[pos] in "[{":
            return _json_calls_at(buffer, pos, ctx, bare=False)
        m = self._name.match(buffer, pos)
        if m is None:
            return REJECT
        if m.end() == len(buffer):
            return REJECT if ctx.final else WAIT
        if m.group() not in ctx.tool_names:
            return REJECT
        pos = m.end()
        has_id = _expect(buffer, pos, "[CALL_ID]", ctx.final)
        if has_id is WAIT:
            return WAIT
        if has_id:
            pos = self._call_id.match(buffer, pos + len("[CALL_ID]")).end()
        has_args = _expect(buffer, pos, "[ARGS]", ctx.final)
        if has_args is not True:
            return WAIT if has_args is WAIT else REJECT
        found = _json_at(buffer, skip_ws(buffer, pos + len("[ARGS]")), ctx)
        if isinstance(found, Verdict):
            return found
        args, end = found
        return Markup(end, ((m.group(), args),)) if isinstance(args, dict) else REJECT


class DeepSeek:
    """DeepSeek V3 / R1 (and the R1 distills), calls between <｜tool▁calls▁begin｜> and <｜tool▁calls▁end｜>:
    <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\\n```json\\n{...}\\n```<｜tool▁call▁end｜>, and V3.1's
    <｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>."""

    name = "deepseek"
    CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
    CALLS_END = "<｜tool▁calls▁end｜>"
    CALL_BEGIN = "<｜tool▁call▁begin｜>"
    CALL_END = "<｜tool▁call▁end｜>"
    SEP = "<｜tool▁sep｜>"
    openers = Openers(anywhere=(CALLS_BEGIN, CALL_BEGIN), after_call=(CALLS_END,))
    _typed_name = re.compile(r"\s*([^\s`{]+)(.*)", re.S)

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        if opener == self.CALLS_END:
            return Markup(len(opener))
        pos = len(opener)
        if opener == self.CALLS_BEGIN:  # the wrapper goes with the first call
            pos = skip_ws(buffer, pos)
            begins = _expect(buffer, pos, self.CALL_BEGIN, ctx.final)
            if begins is not True:
                return WAIT if begins is WAIT else REJECT
            pos += len(self.CALL_BEGIN)
        found = _until(buffer, pos, (self.CALL_END,), ctx)
        if isinstance(found, Verdict):
            return found
        body, end, marker = found
        call = self._call(body, ctx.tool_names)
        return REJECT if call is None else Markup(end + len(marker), (call,))

    def _call(self, body: str, tool_names: Collection[str]) -> tuple[str, dict] | None:
        left, sep, right = body.partition(self.SEP)
        if not sep:
            return None
        name, args_text = left.strip(), right
        if name == "function":  # V3/R1: the type comes first, the name starts the next part
            m = self._typed_name.match(right)
            if m and m.group(1) in tool_names:
                name, args_text = m.groups()
        args = load_json(_unfence(args_text))
        return (name, args) if name in tool_names and isinstance(args, dict) else None


class Harmony:
    """GPT-OSS: a message addressed to a function,
    <|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{...}<|call|>
    (the recipient may also sit in the role part: <|start|>assistant to=functions.NAME<|channel|>…).

    Only addressed messages are calls; other channels belong to reasoning.ReasoningStream, which
    runs first and passes addressed messages through untouched.
    """

    name = "harmony"
    MESSAGE = "<|message|>"
    openers = Openers(anywhere=("<|start|>", "<|channel|>"))
    _consumed_ends = ("<|call|>", "<|end|>", "<|return|>")
    _next_message = ("<|start|>", "<|channel|>")
    _header_limit = 256  # a header longer than this is not one: stop holding the text back
    _recipient = re.compile(r"\bto=functions\.([^\s<]+)")

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        window = self._header_limit + len(self.MESSAGE)
        header_end = buffer.find(self.MESSAGE, len(opener), window)
        if header_end == -1:
            return REJECT if ctx.final or len(buffer) >= window else WAIT
        m = self._recipient.search(buffer, 0, header_end)
        if m is None or m.group(1) not in ctx.tool_names:
            return REJECT
        found = _until(buffer, header_end + len(self.MESSAGE), self._consumed_ends + self._next_message, ctx)
        if isinstance(found, Verdict):
            return found
        body, end, marker = found
        args = load_json(body.strip())
        if not isinstance(args, dict):
            return REJECT
        return Markup(end + (len(marker) if marker in self._consumed_ends else 0), ((m.group(1), args),))


class Llama3Json:
    """Llama 3.1 / 3.2 / 3.3: the whole reply is {"name": ..., "parameters": {...}}, maybe after
    <|python_tag|>, several separated by ";"."""

    name = "llama3_json"
    PYTHON_TAG = "<|python_tag|>"
    openers = Openers(anywhere=(PYTHON_TAG,), at_start=("{", "["), after_call=(";",))

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        if opener == ";":
            return Markup(1)
        if opener == self.PYTHON_TAG:
            return _json_calls_at(buffer, skip_ws(buffer, len(opener)), ctx, bare=False)
        return _json_calls_at(buffer, 0, ctx, bare=True)


class Pythonic:
    """Llama 3.2 / 4 pythonic: the whole reply is [f(a="b", n=1), g()], in Llama 4 maybe wrapped in
    <|python_start|>…<|python_end|>."""

    name = "pythonic"
    START, END = "<|python_start|>", "<|python_end|>"
    openers = Openers(anywhere=(START,), at_start=("[",), after_call=(END,))
    _head = re.compile(r"\[\s*(?:[A-Za-z_][\w.]*\s*)?")

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        if opener == self.END:
            return Markup(len(opener))
        pos = skip_ws(buffer, len(opener)) if opener == self.START else 0
        if pos == len(buffer):
            return REJECT if ctx.final else WAIT
        if buffer[pos] != "[":
            return REJECT
        head = self._head.match(buffer, pos)
        if head.end() < len(buffer) and buffer[head.end()] != "(":  # [name( or nothing: else prose
            return REJECT
        end = python_end(buffer, pos, ctx.memo)
        if end == BROKEN:
            return REJECT
        if end is INCOMPLETE:
            return REJECT if ctx.final else WAIT
        calls = calls_from_python_list(buffer[pos:end], ctx.tool_names)
        return REJECT if calls is None else Markup(end, tuple(calls))


class Generic:
    """Fallback for unknown models: a call object (or list) in a ```json fence, inside any
    <tag>…</tag>, or as the whole reply; also <function=NAME>{arguments}</function>."""

    name = "generic"
    openers = Openers(anywhere=("```", "<"), at_start=("{", "["))
    _fence_langs = frozenset({"", "json", "tool_call", "tool_calls", "function_call"})
    _lang = re.compile(r"[\w-]*")
    _tag = re.compile(r"<(?:function=([\w.\-]+)|\|?([A-Za-z_][\w.\-]*)\|?)>")
    _tag_prefix = re.compile(r"<\|?(?:[A-Za-z_][\w.\-]*\|?)?|<function=[\w.\-]*")

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        if opener == "```":
            return self._fence(buffer, ctx)
        if opener == "<":
            return self._tagged(buffer, ctx)
        return _json_calls_at(buffer, 0, ctx, bare=True)

    def _fence(self, buffer: str, ctx: Context) -> Match:
        lang_end = self._lang.match(buffer, 3).end()
        if lang_end == len(buffer):
            return REJECT if ctx.final else WAIT
        if buffer[3:lang_end].lower() not in self._fence_langs:
            return REJECT
        found = _json_calls_at(buffer, skip_ws(buffer, lang_end), ctx, bare=True)
        if not isinstance(found, Markup):
            return found
        close = skip_ws(buffer, found.length)
        closed = _expect(buffer, close, "```", ctx.final)
        if closed is WAIT:
            return WAIT
        if closed:
            return Markup(close + 3, found.calls)
        return Markup(close, found.calls) if close == len(buffer) else REJECT  # unclosed at the end

    def _tagged(self, buffer: str, ctx: Context) -> Match:
        tag = self._tag.match(buffer)
        if tag is None:
            partial = not ctx.final and self._tag_prefix.fullmatch(buffer) is not None
            return WAIT if partial else REJECT
        function, tag_name = tag.groups()
        pos = skip_ws(buffer, tag.end())
        if function is None:
            found = _json_calls_at(buffer, pos, ctx, bare=False)
        else:  # the name is in the tag, the body holds only the arguments
            found = self._function_body(function, buffer, pos, ctx)
            tag_name = "function"
        if not isinstance(found, Markup):
            return found
        close = skip_ws(buffer, found.length)
        for closer in (f"</{tag_name}>", f"<|/{tag_name}|>"):
            closed = _expect(buffer, close, closer, ctx.final)
            if closed is WAIT:
                return WAIT
            if closed:
                return Markup(close + len(closer), found.calls)
        return found  # no closing tag: the call still stands, what follows is content

    @staticmethod
    def _function_body(name: str, buffer: str, pos: int, ctx: Context) -> Match:
        if name not in ctx.tool_names:
            return REJECT
        found = _json_at(buffer, pos, ctx)
        if isinstance(found, Verdict):
            return found
        args, end = found
        return Markup(end, ((name, args),)) if isinstance(args, dict) else REJECT


class Gemma(Generic):
    """Gemma's function-calling style: ```tool_code\\nf(a="b")\\n```, plus the JSON shapes Gemma 3
    fine-tunes emit ({"name": ..., "parameters": ...} whole or fenced)."""

    name = "gemma"
    TOOL_CODE = "```tool_code"
    openers = Openers(anywhere=(TOOL_CODE, "```", "<"), at_start=("{", "["))

    def match(self, opener: str, buffer: str, ctx: Context) -> Match:
        if opener != self.TOOL_CODE:
            return super().match(opener, buffer, ctx)
        found = _until(buffer, len(opener), ("```",), ctx)
        if isinstance(found, Verdict):
            return found
        body, end, marker = found
        calls = calls_from_python_code(body, ctx.tool_names)
        return REJECT if calls is None else Markup(end + len(marker), tuple(calls))


def all_formats() -> dict[str, Any]:
    """A fresh registry of every format by name (formats hold no state; built per call anyway)."""
    formats = [
        Hermes(),
        Llama3Json(),
        Pythonic(),
        Mistral(),
        DeepSeek(),
        Gemma(),
        Harmony(),
        TaggedJsonList("granite", ("<|tool_call|>", "<tool_call>"), ("</tool_call>",)),
        TaggedJsonList("phi4", ("<|tool_call|>", "functools"), ("<|/tool_call|>",)),
        Generic(),
    ]
    return {f.name: f for f in formats}
