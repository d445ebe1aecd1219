"""Tool-call parsers: golden model outputs, parsed whole and streamed in every possible cut."""

from __future__ import annotations

import json
import pathlib
import re
import time

import pytest

from homeport.services.text.reasoning import ReasoningStream
from homeport.services.text.tool_calls import (
    ParsedOutput,
    StreamDelta,
    ToolCall,
    ToolCallDelta,
    detect_format,
    parser_by_name,
    parser_for,
)

GOLDEN_DIR = pathlib.Path(__file__).parents[3] / "data" / "tool_calls"
PARSER_NAMES = [
    "hermes", "llama3_json", "pythonic", "mistral", "deepseek", "gemma", "harmony", "granite", "phi4", "generic"
]  # fmt: skip
TOOLS = ["get_weather", "get_time", "search_web", "send_email"]
ID = re.compile(r"call_[A-Za-z0-9]{24}")


def _golden_cases():
    for path in sorted(GOLDEN_DIR.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for case in doc["cases"]:
            tools = case.get("tools", doc["tools"])
            yield pytest.param(doc["parser"], tools, case, id=f"{doc['parser']}: {case['name']}")


GOLDEN = list(_golden_cases())


def _expected_calls(case) -> list[tuple[str, str]]:
    return [(c["name"], json.dumps(c["arguments"], ensure_ascii=False)) for c in case["tool_calls"]]


def _run_stream(parser, tools, pieces) -> tuple[str, list[ToolCall]]:
    """Feed the pieces; check the deltas are well-formed; return the joined content and the calls."""
    stream = parser.stream(tools)
    deltas: list[StreamDelta] = [stream.feed(p) for p in pieces] + [stream.finish()]
    content = "".join(d.content for d in deltas)
    calls = stream.tool_calls
    by_index: dict[int, list[ToolCallDelta]] = {}
    for d in deltas:
        for tc in d.tool_calls:
            by_index.setdefault(tc.index, []).append(tc)
    assert sorted(by_index) == list(range(len(calls)))
    for index, call in enumerate(calls):
        first, *rest = by_index[index]
        assert (first.id, first.name) == (call.id, call.name)  # the name comes first, with the id
        assert all(tc.id is None and tc.name is None for tc in rest)
        assert "".join(tc.arguments for tc in by_index[index]) == call.arguments
    return content, calls


def _summary(calls: list[ToolCall]) -> list[tuple[str, str]]:
    return [(c.name, c.arguments) for c in calls]


def test_every_format_has_goldens():
    assert sorted(p.stem for p in GOLDEN_DIR.glob("*.json")) == sorted(PARSER_NAMES)


@pytest.mark.parametrize(("parser_name", "tools", "case"), GOLDEN)
def test_golden_parse(parser_name, tools, case):
    result = parser_by_name(parser_name).parse(case["raw"], tools)
    assert isinstance(result, ParsedOutput)
    assert result.content == case["content"]
    assert _summary(result.tool_calls) == _expected_calls(case)
    for call in result.tool_calls:
        assert ID.fullmatch(call.id)
        assert isinstance(json.loads(call.arguments), dict)


@pytest.mark.parametrize(("parser_name", "tools", "case"), GOLDEN)
def test_golden_stream_matches_parse_at_every_cut(parser_name, tools, case):
    parser = parser_by_name(parser_name)
    raw = case["raw"]
    expected_content = case["content"] or ""
    expected_calls = _expected_calls(case)
    cuts = [[raw], list(raw)] + [[raw[:i], raw[i:]] for i in range(1, len(raw))]
    for pieces in cuts:
        content, calls = _run_stream(parser, tools, pieces)
        assert (content, _summary(calls)) == (expected_content, expected_calls), pieces


PLAIN_TEXTS = [
    "```python\nprint({'a': [1, 2]}, f(x=1))\n```\n",
    '<div class="x">{}</div> <|not a token|> [TOOL] functools [x](y) {z} ```',
    '{"answer": 42, "name": "get_time"}',
    '[{"title": "A"}, {"title": "B"}]',
    "    indented code\n\n",
    "Tabs\tand trailing spaces   ",
    "<",
    "",
]


@pytest.mark.parametrize("parser_name", PARSER_NAMES)
def test_text_without_calls_is_untouched_at_every_cut(parser_name):
    parser = parser_by_name(parser_name)
    for text in PLAIN_TEXTS:
        assert parser.parse(text, TOOLS) == ParsedOutput(content=text, tool_calls=[])
        for pieces in [list(text)] + [[text[:i], text[i:]] for i in range(1, len(text))]:
            assert _run_stream(parser, TOOLS, pieces) == (text, []), pieces


def test_ids_are_fresh_and_shared_between_deltas_and_calls():
    parser = parser_by_name("hermes")
    text = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>' * 2
    stream = parser.stream(TOOLS)
    delta = stream.feed(text)
    ids = [tc.id for tc in delta.tool_calls]
    assert ids == [c.id for c in stream.tool_calls]
    assert len(set(ids + [c.id for c in parser.parse(text, TOOLS).tool_calls])) == 4


def test_text_streams_before_the_call_and_the_call_as_soon_as_it_closes():
    stream = parser_by_name("hermes").stream(TOOLS)
    assert stream.feed("Let me check").content == "Let me check"
    assert stream.feed(" <tool").content == ""  # " " and "<tool" might belong to the markup
    assert stream.feed("_call>\n{\"name\": \"get_weather\", ").content == ""
    delta = stream.feed('"arguments": {"city": "Paris"}}\n</tool_call>')
    assert delta.content == ""
    assert delta.tool_calls == (
        ToolCallDelta(index=0, id=stream.tool_calls[0].id, name="get_weather", arguments='{"city": "Paris"}'),
    )
    assert stream.feed("\nDone").content == "\nDone"
    assert stream.finish() == StreamDelta()


def test_only_a_possible_marker_is_held_back():
    stream = parser_by_name("hermes").stream(TOOLS)
    assert stream.feed("a<b").content == "a<b"  # "<b" can't become "<tool_call>"
    assert stream.feed(" <tool_c").content == ""
    assert stream.feed("ar").content == " <tool_car"
    assert stream.finish().content == ""


def test_rejected_markup_is_released_once_it_cannot_be_a_call():
    stream = parser_by_name("hermes").stream(TOOLS)
    assert stream.feed("<tool_call>").content == ""
    assert stream.feed(" is a tag").content == "<tool_call> is a tag"


def test_ordinary_json_is_released_once_it_cannot_be_a_call():
    stream = parser_by_name("llama3_json").stream(TOOLS)
    assert stream.feed('{"ci').content == ""
    assert stream.feed('ty": "Par').content == '{"city": "Par'  # "city" is no key of a call
    stream = parser_by_name("generic").stream(TOOLS)
    assert stream.feed("```json\n[1, 2").content == "```json\n[1, 2"


def test_without_tools_text_passes_straight_through():
    stream = parser_by_name("hermes").stream([])
    text = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert stream.feed(text).content == text
    assert stream.finish() == StreamDelta()
    assert parser_by_name("llama3_json").parse('{"name": "get_time", "parameters": {}}', []).tool_calls == []


def test_content_is_an_empty_string_without_calls():
    assert parser_by_name("generic").parse("", TOOLS) == ParsedOutput(content="", tool_calls=[])


def test_only_listed_tools_are_calls():
    text = '<tool_call>{"name": "get_time", "arguments": {}}</tool_call>'
    assert parser_by_name("hermes").parse(text, ["get_weather"]) == ParsedOutput(content=text, tool_calls=[])


LONG_CALLS = {
    "hermes": '<tool_call>{{"name": "search_web", "arguments": {{"query": {}}}}}</tool_call>',
    "granite": '<|tool_call|>[{{"name": "search_web", "arguments": {{"query": {}}}}}]',
    "pythonic": "[search_web(query={})]",
}


@pytest.mark.parametrize("fmt", sorted(LONG_CALLS))
def test_long_arguments_in_small_fragments_take_linear_time(fmt):
    items = [f'item {i} \\ "quoted"' for i in range(3000)]  # many strings and escapes: the scanner's worst case
    text = LONG_CALLS[fmt].format(json.dumps(items))
    stream = parser_by_name(fmt).stream(TOOLS)
    started = time.perf_counter()
    for i in range(0, len(text), 3):
        stream.feed(text[i : i + 3])
    stream.finish()
    assert time.perf_counter() - started < 3  # rescanning the buffer per fragment takes ~100x longer
    assert json.loads(stream.tool_calls[0].arguments) == {"query": items}


# --- reasoning first, then tool calls: the service's order ---

PIPELINE = [
    (
        "harmony",
        "<|channel|>analysis<|message|>User wants weather in Tokyo. Call get_weather.<|end|>"
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
        '<|message|>{"city":"Tokyo"}<|call|>',
        False,
        "User wants weather in Tokyo. Call get_weather.",
        "",
        [("get_weather", '{"city": "Tokyo"}')],
    ),
    (
        "harmony",
        "<|channel|>analysis<|message|>Simple question.<|end|><|start|>assistant<|channel|>final<|message|>"
        "Paris is the capital of France.<|return|>",
        False,
        "Simple question.",
        "Paris is the capital of France.",
        [],
    ),
    (
        "hermes",
        "<think>\nThe user wants the weather, so I call the tool.\n</think>\n\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
        False,
        "The user wants the weather, so I call the tool.",
        "",
        [("get_weather", '{"city": "Paris"}')],
    ),
    (
        "deepseek",
        "Maybe I should check the time first.\n</think>\n\n"
        "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_time\n```json\n"
        '{"timezone": "UTC"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>',
        True,
        "Maybe I should check the time first.",
        "",
        [("get_time", '{"timezone": "UTC"}')],
    ),
]


def _pipeline(parser, text_pieces, starts_in_reasoning):
    reasoning_stream = ReasoningStream(starts_in_reasoning=starts_in_reasoning)
    calls_stream = parser.stream(TOOLS)
    reasoning, content = [], []
    for piece in [*text_pieces, None]:
        r, c = reasoning_stream.feed(piece) if piece is not None else reasoning_stream.finish()
        reasoning.append(r)
        content.append(calls_stream.feed(c).content)
    content.append(calls_stream.finish().content)
    return "".join(reasoning), "".join(content), _summary(calls_stream.tool_calls)


@pytest.mark.parametrize(
    ("fmt", "raw", "starts", "reasoning", "content", "calls"),
    PIPELINE,
    ids=["harmony call", "harmony answer", "qwen3 thinking then hermes", "r1 opened by the template then deepseek"],
)
def test_reasoning_then_tool_calls_at_every_cut(fmt, raw, starts, reasoning, content, calls):
    parser = parser_by_name(fmt)
    for pieces in [[raw], list(raw)] + [[raw[:i], raw[i:]] for i in range(1, len(raw))]:
        assert _pipeline(parser, pieces, starts) == (reasoning, content, calls), pieces


# --- choosing the parser ---

TEMPLATES = [
    ("{{- '<|start|>assistant<|channel|>commentary to=functions.' + name }}...<|call|>", "harmony"),
    ("{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] }}", "deepseek"),
    ("{%- if message.tool_calls %}[TOOL_CALLS]{{ tool_calls|tojson }}{% endif %}", "mistral"),
    ("{{ '<|system|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}", "phi4"),
    ("<|start_of_role|>available_tools<|end_of_role|>...<|tool_call|>{{ message.content }}", "granite"),
    ('{{- "<tool_call>\\n{\\"name\\": \\"" }}{{ tool_call.name }}', "hermes"),
    ("[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]", "pythonic"),
    ("{{- '<|header_start|>ipython<|header_end|>' }}", "pythonic"),
    ("{%- if builtin_tools is defined or tools is not none %}{{- 'Environment: ipython\\n' }}", "llama3_json"),
    ("{{ '<start_of_turn>' + role + '\\n' }}", "gemma"),
    ("{{ bos_token }}{% for m in messages %}### {{ m.role }}: {{ m.content }}{% endfor %}", "generic"),
]


@pytest.mark.parametrize(("template", "expected"), TEMPLATES)
def test_detect_from_template(template, expected):
    assert detect_format(template, "some-model") == expected
    assert parser_for(template, "some-model").name == expected


MODEL_NAMES = [
    ("gpt-oss-20b-MXFP4", "harmony"),
    ("DeepSeek-R1-Distill-Qwen-7B-Q4_K_M", "deepseek"),
    ("Qwen2.5-7B-Instruct", "hermes"),
    ("Qwen3-8B", "hermes"),
    ("Hermes-3-Llama-3.1-8B", "hermes"),
    ("granite-4.0-h-tiny", "hermes"),
    ("granite-3.3-8b-instruct", "granite"),
    ("Mistral-Small-3.2-24B-Instruct-2506", "mistral"),
    ("Phi-4-mini-instruct", "phi4"),
    ("Llama-4-Scout-17B-16E-Instruct", "pythonic"),
    ("Meta-Llama-3.1-8B-Instruct", "llama3_json"),
    ("llama3.2:3b", "llama3_json"),
    ("gemma-3-270m-it", "gemma"),
    ("tinyllama-1.1b", "generic"),
]


@pytest.mark.parametrize(("model", "expected"), MODEL_NAMES, ids=[m[0] for m in MODEL_NAMES])
def test_detect_from_model_name(model, expected):
    assert detect_format(None, model) == expected


def test_template_hints_win_over_the_name():
    assert detect_format("<tool_call>", "Meta-Llama-3.1-8B-Instruct") == "hermes"


def test_every_name_has_a_parser_and_unknown_names_fail():
    assert [parser_by_name(n).name for n in PARSER_NAMES] == PARSER_NAMES
    with pytest.raises(ValueError, match="unknown tool-call format"):
        parser_by_name("nonesuch")
