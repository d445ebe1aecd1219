"""/v1/completions over the fake engine: shapes checked against OpenAI's spec."""

import pytest

from homeport.engines.fake import FakeEngine
from support.sse import parse_sse


async def test_completion_body_matches_spec_and_counts_tokens(make_client, spec):
    client = make_client(FakeEngine(script="Paris is lovely."))
    response = await client.http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 100})
    assert response.status_code == 200
    body = response.json()
    spec.validate("CreateCompletionResponse", body)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["choices"][0]["text"] == "Paris is lovely."
    assert body["choices"][0]["finish_reason"] == "stop"
    # fake tokens are bytes: "Hi" + BOS = 3; the output's 16 bytes + EOS = 17
    assert body["usage"] == {
        "prompt_tokens": 3, "completion_tokens": 17, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 0}
    }


async def test_max_tokens_gives_length(client):
    body = (await client.http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 5})).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


async def test_default_max_tokens_is_openais_16(client):
    body = (await client.http.post("/v1/completions", json={"prompt": "Hi"})).json()
    assert body["usage"]["completion_tokens"] == 16


async def test_stop_string_is_cut_and_never_leaks(make_client):
    client = make_client(FakeEngine(script="one two STOP three"))
    body = (await client.http.post("/v1/completions", json={"prompt": "x", "stop": ["STOP"], "max_tokens": 50})).json()
    assert body["choices"][0]["text"] == "one two "
    assert body["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    "prompt,expected_prompt_tokens",
    [("ab", [3]), (["ab", "abc"], [3, 4]), ([100, 101, 102], [3]), ([[100], [100, 101]], [1, 2])],
)
async def test_prompt_forms(client, prompt, expected_prompt_tokens):
    body = (await client.http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 2})).json()
    assert [c["index"] for c in body["choices"]] == list(range(len(expected_prompt_tokens)))
    assert body["usage"]["prompt_tokens"] == sum(expected_prompt_tokens)


async def test_stream_chunks_match_spec_and_carry_one_id(make_client, spec):
    client = make_client(FakeEngine(script="héllo wörld"))
    response = await client.http.post("/v1/completions", json={"prompt": "x", "stream": True, "max_tokens": 100})
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks, done = parse_sse(response.text)
    assert done
    for chunk in chunks:
        spec.validate("CreateCompletionChunk", chunk)
        assert "usage" not in chunk
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    assert "".join(c["choices"][0]["text"] for c in chunks) == "héllo wörld"
    assert all("\ufffd" not in c["choices"][0]["text"] for c in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_include_usage_adds_a_final_usage_chunk(make_client, spec):
    client = make_client(FakeEngine(script="abc"))
    payload = {"prompt": "x", "stream": True, "stream_options": {"include_usage": True}, "max_tokens": 10}
    chunks, done = parse_sse((await client.http.post("/v1/completions", json=payload)).text)
    assert done
    *text_chunks, last = chunks
    assert all(c["usage"] is None for c in text_chunks)
    assert last["choices"] == []
    assert last["usage"] == {
        "prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6, "prompt_tokens_details": {"cached_tokens": 0}
    }
    for chunk in chunks:
        spec.validate("CreateCompletionChunk", chunk)


async def test_stream_stop_string_split_across_tokens_never_leaks(make_client):
    # every fake token is one byte, so the stop string arrives split across six tokens
    client = make_client(FakeEngine(script="keep this<STOP>drop this"))
    payload = {"prompt": "x", "stream": True, "stop": "<STOP>", "max_tokens": 100}
    chunks, _ = parse_sse((await client.http.post("/v1/completions", json=payload)).text)
    texts = [c["choices"][0]["text"] for c in chunks]
    assert "".join(texts) == "keep this"
    assert not any(part in text for text in texts for part in ("<", "STOP"))


async def test_several_prompts_stream_with_their_indexes(make_client):
    client = make_client(FakeEngine(script="ok"))
    payload = {"prompt": ["a", "b"], "stream": True, "max_tokens": 10}
    chunks, done = parse_sse((await client.http.post("/v1/completions", json=payload)).text)
    assert done
    finishes = [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"][0]["finish_reason"]]
    assert finishes == [(0, "stop"), (1, "stop")]


async def test_failure_mid_stream_sends_error_frame_then_done(make_client, spec):
    client = make_client(FakeEngine(script="abcdef", fail_at_step=3))
    response = await client.http.post("/v1/completions", json={"prompt": "x", "stream": True, "max_tokens": 50})
    assert response.status_code == 200
    chunks, done = parse_sse(response.text)
    assert done
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == "abc"
    spec.validate("ErrorResponse", chunks[-1])
    assert chunks[-1]["error"]["type"] == "server_error"


async def test_same_seed_same_text(client):
    payload = {"prompt": "x", "seed": 7, "temperature": 1.0, "max_tokens": 30}
    first = (await client.http.post("/v1/completions", json=payload)).json()["choices"][0]["text"]
    second = (await client.http.post("/v1/completions", json=payload)).json()["choices"][0]["text"]
    other = (await client.http.post("/v1/completions", json={**payload, "seed": 8})).json()["choices"][0]["text"]
    assert first == second != other


async def test_official_client_completion_and_stream(make_client):
    client = make_client(FakeEngine(script="fine"))
    oai = client.openai()
    result = await oai.completions.create(model="fake-model", prompt="Hi", max_tokens=10)
    assert result.choices[0].text == "fine" and result.usage.total_tokens == 8
    stream = await oai.completions.create(model="fake-model", prompt="Hi", max_tokens=10, stream=True)
    assert "".join([chunk.choices[0].text async for chunk in stream]) == "fine"
