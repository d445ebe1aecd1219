"""Chat and completions on the real default model through the official client and raw HTTP."""

from __future__ import annotations

import json

import pytest

from support.sse import parse_sse

COUNTING = "1, 2, 3, 4, 5, 6,"


def test_completion_continues_the_prompt(server, client, spec):
    result = client.completions.create(model="any", prompt=COUNTING, max_tokens=12, temperature=0)
    text = result.choices[0].text
    assert text.startswith(" 7, 8, 9")
    assert result.usage.completion_tokens == 12 and result.choices[0].finish_reason == "length"
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + 12
    with server.http() as http:
        body = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 4, "temperature": 0}).json()
    spec.validate("CreateCompletionResponse", body)


def test_usage_counts_are_the_engines(server):
    with server.http() as http:
        encoded = http.post("/v1/internal/encode", json={"text": COUNTING}).json()
        body = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 3, "temperature": 0}).json()
    assert body["usage"]["prompt_tokens"] == encoded["length"]


def test_token_id_prompt_equals_text_prompt(server):
    with server.http() as http:
        tokens = http.post("/v1/internal/encode", json={"text": COUNTING}).json()["tokens"]
        by_text = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 8, "temperature": 0}).json()
        by_ids = http.post("/v1/completions", json={"prompt": tokens, "max_tokens": 8, "temperature": 0}).json()
        both = http.post("/v1/completions", json={"prompt": [COUNTING, "10, 11, 12,"], "max_tokens": 4, "temperature": 0}).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert [c["index"] for c in both["choices"]] == [0, 1]
    assert both["choices"][1]["text"].startswith(" 13")


def test_chat_completion(client):
    result = client.chat.completions.create(
        model="any",
        messages=[
            {"role": "system", "content": "You count."},
            {"role": "user", "content": "Continue: 1, 2, 3"},
        ],
        max_tokens=20,
        temperature=0,
    )
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    # The template's end-of-turn marker never shows in the text.
    assert "<end_of_turn>" not in choice.message.content and "<start_of_turn>" not in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert result.usage.completion_tokens <= 20


def test_chat_stream_is_well_formed(server, spec):
    payload = {
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 16,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
    }
    with server.http() as http:
        response = http.post("/v1/chat/completions", json=payload)
    chunks, done = parse_sse(response.text)
    assert done
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk)
    *body, usage = chunks
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] is not None for c in body].count(True) == 1
    assert body[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] <= 16
    assert len({c["id"] for c in chunks}) == 1


def test_completion_stream_matches_the_whole_response(server, client, spec):
    whole = client.completions.create(model="m", prompt=COUNTING, max_tokens=24, temperature=0).choices[0].text
    stream = client.completions.create(model="m", prompt=COUNTING, max_tokens=24, temperature=0, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    with server.http() as http:
        raw = http.post("/v1/completions", json={"prompt": COUNTING, "max_tokens": 5, "stream": True, "temperature": 0})
    payloads, done = parse_sse(raw.text)
    assert done
    for payload in payloads:
        spec.validate("CreateCompletionChunk", payload)


@pytest.mark.parametrize("stream", [False, True])
def test_stop_strings_never_leak(client, stream):
    # " 9, 1" spans several tokens (digits are single tokens in this vocabulary)
    kwargs = dict(model="m", prompt=COUNTING, max_tokens=40, temperature=0, stop=[" 9, 1", "never"])
    if stream:
        chunks = list(client.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].text for c in chunks)
        finish = chunks[-1].choices[0].finish_reason
    else:
        choice = client.completions.create(**kwargs).choices[0]
        text, finish = choice.text, choice.finish_reason
    assert text == " 7, 8,"
    assert finish == "stop"


def test_same_seed_same_text_other_seed_other_text(client):
    def sample(seed: int) -> str:
        return client.completions.create(
            model="m", prompt="Once upon a time", max_tokens=24, temperature=1.0, seed=seed
        ).choices[0].text

    first, again, other = sample(1234), sample(1234), sample(99)
    assert first == again
    assert first != other


def test_logit_bias_bans_a_token(server, client):
    with server.http() as http:
        seven = http.post("/v1/internal/encode", json={"text": "7"}).json()["tokens"][-1]
    text = client.completions.create(
        model="m", prompt=COUNTING, max_tokens=6, temperature=0, logit_bias={str(seven): -100}
    ).choices[0].text
    assert not text.startswith(" 7")


def test_utf8_characters_arrive_whole_in_streams(client):
    prompt = "Japanese words: 日本語, 東京, 大阪, 京都,"
    chunks = list(client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0, stream=True))
    texts = [c.choices[0].text for c in chunks]
    assert all("\ufffd" not in t for t in texts)
    whole = client.completions.create(model="m", prompt=prompt, max_tokens=24, temperature=0).choices[0].text
    assert "".join(texts) == whole


def test_raw_body_is_plain_json(server):
    with server.http() as http:
        response = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert response.headers["content-type"].startswith("application/json")
    json.loads(response.text)
