"""Anthropic's thinking budget on the fake engine (one token per byte): the reasoning stops at the
budget, a second generation continues from the reasoning + "</think>" and writes the answer, and
the whole reply stays within max_tokens; thinking blocks come signed."""

from __future__ import annotations

import itertools
import json

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from homeport.engines.fake import FakeEngine
from homeport.services.text.thinking_budget import ReasoningMeter

EVENTS = pydantic.TypeAdapter(RawMessageStreamEvent)
# A ChatML template that opens the reply's <think> block when thinking is on (as Qwen3's does).
THINK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking %}<think>\n{% endif %}{% endif %}"
)
SCRIPT = "ponder " * 40 + "</think>Four."


def _body(**fields) -> dict:
    return {
        "model": "m",
        "max_tokens": 150,
        "messages": [{"role": "user", "content": "2+2?"}],
        "thinking": {"type": "enabled", "budget_tokens": 30},
        **fields,
    }


@pytest.fixture
def engine():
    return FakeEngine(script=SCRIPT, chat_template=THINK_TEMPLATE, context_length=2048)


async def test_the_budget_ends_the_thinking_and_the_answer_follows(make_client, engine):
    client = make_client(engine)
    response = await client.http.post("/v1/messages", json=_body())
    assert response.status_code == 200
    message = response.json()
    Message.model_validate(message, strict=True)
    thinking, text = message["content"]
    assert thinking["type"] == "thinking" and text["type"] == "text"
    assert 0 < len(thinking["thinking"]) <= 30  # one token per byte: the budget bounds the characters
    assert thinking["signature"] and "</think>" not in text["text"]
    first, second = engine.requests
    continued = engine.detokenize(second.prompt_tokens)
    assert continued == engine.detokenize(first.prompt_tokens) + "ponder " * 4 + "po\n</think>\n\n"
    assert message["usage"]["output_tokens"] <= 150 and second.max_tokens == 150 - 30 - len("\n</think>\n\n")
    assert message["stop_reason"] == "max_tokens"  # the fake replays its script: longer than what is left


async def test_the_streamed_thinking_is_signed_before_its_block_stops(make_client, engine):
    client = make_client(engine)
    async with client.http.stream("POST", "/v1/messages", json=_body(stream=True)) as response:
        lines = [line async for line in response.aiter_lines()]
    pairs = [
        (name[7:], json.loads(data[6:]))
        for name, data in itertools.pairwise(lines)
        if name.startswith("event: ") and data.startswith("data: ")
    ]
    for name, data in pairs:
        if name != "ping":
            EVENTS.validate_python(data, strict=True)
    deltas = [d["delta"] for n, d in pairs if n == "content_block_delta" and d["index"] == 0]
    assert {d["type"] for d in deltas} == {"thinking_delta", "signature_delta"}
    assert deltas[-1]["type"] == "signature_delta" and deltas[-1]["signature"]
    assert len("".join(d.get("thinking", "") for d in deltas)) <= 30
    stop = next(i for i, (n, d) in enumerate(pairs) if n == "content_block_stop" and d["index"] == 0)
    assert pairs[stop - 1][1]["delta"]["type"] == "signature_delta"


async def test_without_a_budget_the_model_thinks_until_it_is_done(make_client, engine):
    client = make_client(engine)
    message = (await client.http.post("/v1/messages", json=_body(max_tokens=400, thinking={"type": "adaptive"}))).json()
    assert message["content"][0]["thinking"] == SCRIPT.split("</think>")[0].strip()
    assert message["content"][1]["text"] == "Four." and len(engine.requests) == 1


async def test_a_budget_the_model_stays_under_changes_nothing(make_client, engine):
    client = make_client(engine)
    body = _body(max_tokens=400, thinking={"type": "enabled", "budget_tokens": 399})
    message = (await client.http.post("/v1/messages", json=body)).json()
    assert message["content"][1]["text"] == "Four." and len(engine.requests) == 1


def test_the_meter_counts_only_tokens_inside_reasoning():
    meter = ReasoningMeter(starts_in_reasoning=False, budget=5)
    assert not meter.feed("Hi ", 1)
    assert not meter.feed("<thi", 2) and not meter.feed("nk>a", 3)  # a marker split across deltas
    assert not meter.feed("b", 4) and meter.reasoning_tokens == 2
    assert not meter.feed("</think>", 5) and not meter.feed("answer", 9)
    assert meter.reasoning_tokens == 3 and not meter.inside
    spent = ReasoningMeter(starts_in_reasoning=True, budget=2)
    assert not spent.feed("a", 1) and spent.feed("b", 2)
