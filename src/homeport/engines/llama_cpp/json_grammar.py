"""JSON schema → GBNF, on llama-cpp-python's converter plus integer bounds, which it ignores.

Without bounds, `{"type": "integer", "maximum": 99}` would let the model write 1000000000000000
and the output would fail validation: "always parses" must mean "always validates".
"""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import RESERVED_NAMES, BuiltinRule, SchemaConverter

_LIMIT = 10**15 - 1  # the converter's own integers have at most 16 digits
# The converter's string character is `[^"\\]`, which lets a raw newline or tab into a string:
# invalid JSON. Control characters must be escaped (as llama.cpp's own converter requires).
_JSON_CHAR = BuiltinRule(
    r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])', []
)


# `or_text`: the schema's JSON, or plain text that cannot begin like JSON or with white space (so
# the first character decides which, and a call can only be written whole).
_OR_TEXT_ROOT = "\nroot ::= json-value | plain-text\nplain-text ::= [^{\\[ \\t\\r\\n] .*\n"


def json_schema_to_gbnf(schema_json: str, *, or_text: bool = False) -> str:
    schema = json.loads(schema_json)
    converter = _BoundedConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    schema = converter.resolve_refs(schema, "input")
    converter.visit(schema, "json-value" if or_text else "")
    grammar = converter.format_grammar()
    return grammar + _OR_TEXT_ROOT if or_text else grammar


class _BoundedConverter(SchemaConverter):
    def _add_primitive(self, name: str, rule: BuiltinRule):
        return super()._add_primitive(name, _JSON_CHAR if name == "char" else rule)

    def visit(self, schema, name):
        bounds = _integer_bounds(schema)
        if bounds is None:
            return super().visit(schema, name)
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
        return self._add_rule(rule_name, f"({integer_range_rule(*bounds)}) space")


def _integer_bounds(schema: object) -> tuple[int, int] | None:
    if not isinstance(schema, dict) or schema.get("type") != "integer":
        return None
    keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    if not any(isinstance(schema.get(k), int | float) for k in keys):
        return None
    low, high = -_LIMIT, _LIMIT
    if isinstance(schema.get("minimum"), int | float):
        low = max(low, _ceil(schema["minimum"]))
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low = max(low, _floor(schema["exclusiveMinimum"]) + 1)
    if isinstance(schema.get("maximum"), int | float):
        high = min(high, _floor(schema["maximum"]))
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high = min(high, _ceil(schema["exclusiveMaximum"]) - 1)
    if low > high:
        raise ValueError(f"no integer satisfies the bounds of {json.dumps(schema)}")
    return low, high


def _floor(value: float) -> int:
    return int(value // 1)


def _ceil(value: float) -> int:
    return -int(-value // 1)


def integer_range_rule(low: int, high: int) -> str:
    """A GBNF expression matching exactly the decimal integers in [low, high], no leading zeros."""
    alternatives = []
    if low < 0:
        # -a..-b is "-" followed by b..a
        negative_high = min(high, -1)
        alternatives += [f'"-" {p}' for p in _patterns(-negative_high, -low)]
    if high >= 0:
        alternatives += _patterns(max(low, 0), high)
    return " | ".join(alternatives)


def _patterns(low: int, high: int) -> list[str]:
    """Digit patterns covering [low, high] (both ≥ 0): split at the boundaries where a run of
    trailing digits goes from all-0 to all-9, so each piece is fixed digits + [a-b] + [0-9]*k."""
    patterns = []
    start = low
    for stop in _split(low, high):
        patterns.append(_piece(start, stop))
        start = stop + 1
    return patterns


def _split(low: int, high: int) -> list[int]:
    stops = {high}
    nines = 1
    stop = _fill_nines(low, nines)
    while low <= stop < high:
        stops.add(stop)
        nines += 1
        stop = _fill_nines(low, nines)
    zeros = 1
    stop = _fill_zeros(high + 1, zeros) - 1
    while low < stop <= high:
        stops.add(stop)
        zeros += 1
        stop = _fill_zeros(high + 1, zeros) - 1
    return sorted(stops)


def _fill_nines(value: int, count: int) -> int:
    text = str(value)
    return int(text[:-count] + "9" * count) if count <= len(text) else int("9" * count)


def _fill_zeros(value: int, count: int) -> int:
    return value - value % 10**count


def _piece(start: int, stop: int) -> str:
    parts = []
    free = 0
    for a, b in zip(str(start), str(stop)):
        if a == b:
            parts.append(f'"{a}"')
        elif a != "0" or b != "9":
            parts.append(f"[{a}-{b}]")
        else:
            free += 1
    parts += ["[0-9]"] * free
    return "(" + " ".join(parts) + ")"
