"""Reading call payloads: JSON objects and lists, Python-style calls, and where they end in a buffer.

The `*_end` scanners answer "is this value complete yet?" on a growing buffer, so a stream can wait
for exactly as much text as the whole-text parse looks at.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Collection
from typing import Any, cast

Call = tuple[str, dict]  # a validated (name, arguments) pair, before it gets an id

INCOMPLETE = None  # the value may still complete with more text
BROKEN = -1  # no amount of further text makes this a value

_JSON_TOKEN = re.compile(r'["{}\[\]]')
_PY_TOKEN = re.compile(r"[\"'(){}\[\]#]")
_CLOSERS = {"{": "}", "[": "]", "(": ")"}

# Keys a call object written without surrounding markup may have; anything else means it is data.
_BARE_KEYS = frozenset({"name", "arguments", "parameters", "type", "id", "function"})
_FIRST_KEY = re.compile(r'\[?\s*\{\s*"((?:[^"\\]|\\.)*)"')


class _Scan:
    """How far a bracket scan of a growing buffer got, so the next look goes on from there."""

    __slots__ = ("pos", "stack", "quote", "result")

    def __init__(self, start: int) -> None:
        self.pos = start
        self.stack: list[str] = []
        self.quote = ""  # the quote of the string the scan is inside, if any
        self.result: int | None = INCOMPLETE


def _bracket_end(text: str, start: int, python: bool, memo: dict | None) -> int | None:
    """End of the bracketed value at `start`, INCOMPLETE or BROKEN.

    `memo` is scratch for one growing buffer (text only ever appended): with it each character is
    scanned once however many times the stream asks, instead of once per fragment.
    """
    key = ("python" if python else "json", start)
    scan = memo.get(key) if memo is not None else None
    if scan is None:
        scan = _Scan(start)
        if memo is not None:
            memo[key] = scan
    if scan.result is not INCOMPLETE:
        return scan.result
    token = _PY_TOKEN if python else _JSON_TOKEN
    pos, stack = scan.pos, scan.stack
    while True:
        if scan.quote:
            close = text.find(scan.quote, pos)
            if python and "\n" in text[pos : len(text) if close == -1 else close]:
                scan.result = BROKEN  # Python strings cannot hold a raw newline
                return BROKEN
            if close == -1:
                scan.pos = len(text)
                return INCOMPLETE
            backslash = close
            while text[backslash - 1] == "\\":  # stops at the opening quote at the latest
                backslash -= 1
            pos = close + 1
            if (close - backslash) % 2 == 0:  # not an escaped quote
                scan.quote = ""
            continue
        m = token.search(text, pos)
        if m is None:
            scan.pos = len(text)
            return INCOMPLETE
        ch, pos = m.group(), m.end()
        if ch in "\"'":
            scan.quote = ch
        elif ch == "#":  # a comment has no place in a call list
            scan.result = BROKEN
            return BROKEN
        elif ch in _CLOSERS:
            stack.append(_CLOSERS[ch])
        elif not stack or stack.pop() != ch:
            scan.result = BROKEN
            return BROKEN
        elif not stack:
            scan.result = pos
            return pos


def json_end(text: str, start: int, memo: dict | None = None) -> int | None:
    """End (exclusive) of the JSON object or array opening at `start`, INCOMPLETE, or BROKEN."""
    return _bracket_end(text, start, False, memo)


def python_end(text: str, start: int, memo: dict | None = None) -> int | None:
    """Same for a Python bracketed expression (both quote styles)."""
    return _bracket_end(text, start, True, memo)


def skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def load_json(text: str) -> Any:
    """Parse JSON leniently about raw control characters in strings (models write real newlines)."""
    try:
        return json.loads(text, strict=False)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return None


def bare_start_is_plausible(text: str, start: int) -> bool:
    """False once a markup-less value visibly is not a call object (its first key is no call key).

    Lets a stream release ordinary JSON content early instead of holding it to the end.
    """
    m = _FIRST_KEY.match(text, start)
    if m is None:
        return True
    return m.group(1) in _BARE_KEYS


def call_from_object(obj: Any, tool_names: Collection[str], *, bare: bool) -> Call | None:
    """A call from {"name", "arguments"|"parameters"} (or OpenAI's {"function": {...}}).

    `bare` is for objects found without tool-call markup around them: they must look like nothing
    but a call, so ordinary JSON answers are not mistaken for one.
    """
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        if bare and not obj.keys() <= {"type", "function", "id"}:
            return None
        obj = obj["function"]
    if bare and not obj.keys() <= _BARE_KEYS - {"function"}:
        return None
    name = obj.get("name")
    if not isinstance(name, str) or name not in tool_names:
        return None
    if "arguments" in obj:
        args = obj["arguments"]
    elif "parameters" in obj:
        args = obj["parameters"]
    elif bare:
        return None
    else:
        args = {}
    if isinstance(args, str):  # some models encode the arguments twice
        args = load_json(args)
    if not isinstance(args, dict):
        return None
    return name, args


def _whole(calls: list[Call | None]) -> list[Call] | None:
    """A batch of calls stands or falls whole: one bad item leaves all of it as text."""
    if not calls or None in calls:
        return None
    return cast(list[Call], calls)


def calls_from_json(value: Any, tool_names: Collection[str], *, bare: bool) -> list[Call] | None:
    """All calls in one object or a non-empty list of objects; None unless every item is a call."""
    items = value if isinstance(value, list) else [value]
    return _whole([call_from_object(item, tool_names, bare=bare) for item in items])


def calls_from_json_text(text: str, tool_names: Collection[str]) -> list[Call] | None:
    """Calls from one or more JSON values separated by whitespace (one per line is common)."""
    decoder = json.JSONDecoder(strict=False)
    calls: list[Call] = []
    pos = skip_ws(text, 0)
    if pos == len(text):
        return None
    while pos < len(text):
        try:
            value, pos = decoder.raw_decode(text, pos)
        except (ValueError, RecursionError):
            return None
        found = calls_from_json(value, tool_names, bare=False)
        if found is None:
            return None
        calls.extend(found)
        pos = skip_ws(text, pos)
    return calls


# --- Python-style calls: [f(a="b", n=1), g()] ---

_PY_NAMES = {"true": True, "false": False, "null": None, "none": None}


class _NotLiteral(Exception):
    pass


def _literal(node: ast.expr) -> Any:
    """A JSON-able value from a literal expression; JSON spellings (true, null) are forgiven."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
            return value
        if isinstance(value, float) and math.isfinite(value):
            return value
        raise _NotLiteral
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _NotLiteral
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for key, value in zip(node.keys, node.values):
            k = None if key is None else _literal(key)
            if not isinstance(k, str):
                raise _NotLiteral
            out[k] = _literal(value)
        return out
    if isinstance(node, ast.Name) and node.id.lower() in _PY_NAMES:
        return _PY_NAMES[node.id.lower()]
    raise _NotLiteral


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


def call_from_python(node: ast.expr, tool_names: Collection[str]) -> Call | None:
    """f(a=1) → ("f", {"a": 1}); keyword arguments only, since positions have no names."""
    if not isinstance(node, ast.Call) or node.args:
        return None
    name = _dotted(node.func)
    if name is None or name not in tool_names:
        return None
    args = {}
    for kw in node.keywords:
        if kw.arg is None:
            return None
        try:
            args[kw.arg] = _literal(kw.value)
        except (_NotLiteral, RecursionError):
            return None
    return name, args


def calls_from_python_list(text: str, tool_names: Collection[str]) -> list[Call] | None:
    """Calls from a Python list expression of calls: "[f(a=1), g()]"."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not isinstance(node, ast.List):
        return None
    return _whole([call_from_python(e, tool_names) for e in node.elts])


def calls_from_python_code(text: str, tool_names: Collection[str]) -> list[Call] | None:
    """Calls from code that only calls tools: one call per statement, print(...) unwrapped."""
    try:
        module = ast.parse(text.strip(), mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    nodes: list[ast.expr] = []
    for stmt in module.body:
        if not isinstance(stmt, ast.Expr):
            return None
        value = stmt.value
        if (
            isinstance(value, ast.Call)
            and isinstance(value.func, ast.Name)
            and value.func.id == "print"
            and len(value.args) == 1
            and not value.keywords
        ):
            value = value.args[0]
        nodes.extend(value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value])
    return _whole([call_from_python(n, tool_names) for n in nodes])
