import json

import pytest

from homeport.services.text.tool_calls.forced import ForcedCallParser

SINGLE = '{"name": "get_weather", "arguments": {"city": "Paris \\"Centre\\"", "days": 3, "tags": ["a}", {"x": 1}]}}'
MANY = '[{"name":"a","arguments":{"n":1}}, {"name": "b", "arguments": {}}]'


def feed(text: str, size: int):
    stream = ForcedCallParser().stream(["get_weather", "a", "b"])
    deltas = []
    for i in range(0, len(text), size):
        deltas += stream.feed(text[i : i + size]).tool_calls
    deltas += stream.finish().tool_calls
    return deltas, stream.tool_calls


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_arguments_stream_in_fragments_after_the_name(size):
    deltas, calls = feed(SINGLE, size)
    assert deltas[0].name == "get_weather" and deltas[0].id and deltas[0].arguments == ""
    fragments = [d.arguments for d in deltas[1:]]
    assert all(d.name is None and d.index == 0 for d in deltas[1:])
    if size < 10:
        assert len(fragments) > 3  # really incremental
    assert json.loads("".join(fragments)) == json.loads(SINGLE)["arguments"]
    assert [c.name for c in calls] == ["get_weather"] and calls[0].id == deltas[0].id
    assert calls[0].arguments == "".join(fragments)


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_parallel_calls_get_their_own_indexes(size):
    deltas, calls = feed(MANY, size)
    names = {d.index: d.name for d in deltas if d.name}
    assert names == {0: "a", 1: "b"}
    for index, expected in ((0, {"n": 1}), (1, {})):
        assert json.loads("".join(d.arguments for d in deltas if d.index == index)) == expected
    assert [json.loads(c.arguments) for c in calls] == [{"n": 1}, {}]


def test_a_space_before_the_arguments_in_a_later_fragment():
    stream = ForcedCallParser().stream(["f"])
    first = stream.feed('{"name": "f", "arguments":')
    later = stream.feed(' {"k": 2}}')
    assert first.tool_calls[0].name == "f"
    assert "".join(d.arguments for d in later.tool_calls) == '{"k": 2}'
    assert stream.tool_calls[0].arguments == '{"k": 2}'
