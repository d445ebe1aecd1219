"""Reasoning separation: <think> blocks and harmony channels, whole and streamed in every cut."""

from __future__ import annotations

import pytest

from homeport.services.text.reasoning import (
    ReasoningSplit,
    ReasoningStream,
    prompt_opens_reasoning,
    split_reasoning,
)

ADDRESSED = (
    "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json"
    '<|message|>{"city":"Oslo"}<|call|>'
)

# (id, raw output, starts_in_reasoning, expected reasoning, expected content)
CASES = [
    (
        "qwen3 thinking",
        "<think>\nOkay, the user asks for 2+2. That's 4.\n</think>\n\n2 + 2 = 4.",
        False,
        "Okay, the user asks for 2+2. That's 4.",
        "2 + 2 = 4.",
    ),
    ("qwen3 thinking switched off", "<think>\n\n</think>\n\nHello!", False, None, "Hello!"),
    (
        "template opened <think>",
        "The user greets me. I should greet back.\n</think>\n\nHello!",
        True,
        "The user greets me. I should greet back.",
        "Hello!",
    ),
    ("the template opened <think>, the model repeats it", "<think>\nHmm.\n</think>\n\nDone.", True, "Hmm.", "Done."),
    ("unterminated think", "<think>\nLet me count: 1, 2, 3", False, "Let me count: 1, 2, 3", ""),
    ("opened by the template, never closed", "Still thinking about", True, "Still thinking about", ""),
    ("no reasoning", "Plain answer with <b>tags</b>, a < sign and <thinking> prose.", False, None,
     "Plain answer with <b>tags</b>, a < sign and <thinking> prose."),
    ("text around a think block", "Sure. <think>hmm</think>\n Done", False, "hmm", "Sure. Done"),
    ("content whitespace kept inside", "<think>x</think>\n\nLine 1\n\nLine 2\n", False, "x", "Line 1\n\nLine 2\n"),
    ("stray close is dropped", "Answer first</think>\n\nthen more", False, None, "Answer first\n\nthen more"),
    ("two think blocks", "<think>a</think>b <think>c</think>d", False, "ac", "b d"),
    ("empty output", "", False, None, ""),
    (
        "harmony analysis then final",
        "<|channel|>analysis<|message|>User asks the capital of France. Answer: Paris.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The capital of France is Paris.<|return|>",
        False,
        "User asks the capital of France. Answer: Paris.",
        "The capital of France is Paris.",
    ),
    ("harmony final only", "<|channel|>final<|message|>Hi there!", False, None, "Hi there!"),
    (
        "harmony tool call passes through",
        "<|channel|>analysis<|message|>Need the weather in Oslo.<|end|>" + ADDRESSED,
        False,
        "Need the weather in Oslo.",
        ADDRESSED,
    ),
    (
        "harmony preamble then tool call",
        "<|channel|>analysis<|message|>Need weather.<|end|>"
        "<|start|>assistant<|channel|>commentary<|message|>Let me check the weather.<|end|>" + ADDRESSED,
        False,
        "Need weather.",
        "Let me check the weather." + ADDRESSED,
    ),
    (
        "harmony cut inside a header",
        "<|channel|>analysis<|message|>Thinking<|end|><|start|>assistant<|channel|>fin",
        False,
        "Thinking",
        "",
    ),
    ("harmony cut inside analysis", "<|channel|>analysis<|message|>I am still thi", False, "I am still thi", ""),
    (
        "a harmony marker in ordinary text",
        "The token <|start|> begins a message. " + "x" * 300,
        False,
        None,
        "The token <|start|> begins a message. " + "x" * 300,
    ),
]


@pytest.mark.parametrize(("raw", "starts", "reasoning", "content"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_split(raw, starts, reasoning, content):
    assert split_reasoning(raw, starts_in_reasoning=starts) == ReasoningSplit(reasoning=reasoning, content=content)


def _streamed(pieces, starts):
    stream = ReasoningStream(starts_in_reasoning=starts)
    steps = [stream.feed(p) for p in pieces] + [stream.finish()]
    return "".join(r for r, _ in steps), "".join(c for _, c in steps)


@pytest.mark.parametrize(("raw", "starts", "reasoning", "content"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stream_matches_whole_text_at_every_cut(raw, starts, reasoning, content):
    expected = (reasoning or "", content)
    for pieces in [[raw], list(raw)] + [[raw[:i], raw[i:]] for i in range(1, len(raw))]:
        assert _streamed(pieces, starts) == expected, pieces


def test_only_a_possible_marker_is_held_back():
    stream = ReasoningStream()
    assert stream.feed("Hello <th") == ("", "Hello ")
    assert stream.feed("ink>Hmm") == ("Hmm", "")
    assert stream.feed(" so </thi") == (" so", "")  # the space waits: it may be trailing
    assert stream.feed("nk>\n\nHi <b") == ("", "Hi <b")
    assert stream.finish() == ("", "")


def test_reasoning_streams_as_it_comes():
    stream = ReasoningStream(starts_in_reasoning=True)
    assert stream.feed("\nFirst") == ("First", "")
    assert stream.feed(" step,") == (" step,", "")
    assert stream.feed(" second.\n</think>") == (" second.", "")
    assert stream.feed("\n\nAnswer") == ("", "Answer")


@pytest.mark.parametrize(
    ("prompt", "opens"),
    [
        ("<|im_start|>assistant\n<think>\n", True),
        ("<｜Assistant｜><think>", True),
        ("<|im_start|>assistant\n<think>\n\n</think>\n\n", False),
        ("<|im_start|>user\nWhat does <think> do?<|im_end|>\n<|im_start|>assistant\n", False),
    ],
)
def test_prompt_opens_reasoning(prompt, opens):
    assert prompt_opens_reasoning(prompt) is opens
