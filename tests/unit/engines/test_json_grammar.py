import json
import random
import re

import pytest

from homeport.engines.llama_cpp.json_grammar import integer_range_rule, json_schema_to_gbnf


def as_regex(rule: str) -> re.Pattern:
    pattern = rule.replace('"-"', "-").replace(" | ", "|")
    pattern = re.sub(r'"(\d)"', r"\1", pattern).replace(" ", "")
    return re.compile(pattern)


@pytest.mark.parametrize("low,high", [(0, 0), (0, 9), (0, 2569), (7, 1234), (-50, 50), (-1000, -3), (95, 105), (1, 10**6)])
def test_integer_range_rule_matches_exactly_the_range(low, high):
    regex = as_regex(integer_range_rule(low, high))
    window = range(low - 200, high + 200) if high - low < 5000 else random.Random(1).sample(range(low - 10**6, high + 10**6), 20000)
    for value in window:
        assert bool(regex.fullmatch(str(value))) == (low <= value <= high), value
    assert not regex.fullmatch("007") and not regex.fullmatch("-0")


def test_bounded_integers_reach_the_grammar():
    schema = {"type": "object", "properties": {"port": {"type": "integer", "minimum": 1, "maximum": 65535}}}
    rules = dict(line.split(" ::= ", 1) for line in json_schema_to_gbnf(json.dumps(schema)).splitlines())
    assert rules["port"] == f"({integer_range_rule(1, 65535)}) space"
    assert rules["port-kv"].endswith(" port")


def test_impossible_bounds_are_an_error():
    with pytest.raises(ValueError):
        json_schema_to_gbnf(json.dumps({"type": "integer", "minimum": 5, "maximum": 4}))


def test_strings_cannot_hold_raw_control_characters():
    # JSON needs a newline inside a string escaped; a raw one makes the output unparsable.
    grammar = json_schema_to_gbnf(json.dumps({"type": "object", "properties": {"a": {"type": "string", "maxLength": 9}}}))
    (char_rule,) = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert char_rule.startswith(r'char ::= [^"\\\x7F\x00-\x1F]')
