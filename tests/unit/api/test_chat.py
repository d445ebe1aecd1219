"""/v1/chat/completions over the fake engine."""

from homeport.engines.fake import FakeEngine
from support.sse import parse_sse

GEMMA_TEMPLATE_MODEL = "gemma-3-270m-test"


async def test_chat_body_matches_spec(make_client, spec):
    client = make_client(FakeEngine(script="Hello there."))
    body = (await client.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})).json()
    spec.validate("CreateChatCompletionResponse", body)
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hello there.", "refusal": None}
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_prompt_is_built_with_the_model_families_template(make_client):
    engine = FakeEngine(model_id=GEMMA_TEMPLATE_MODEL, script="ok")
    client = make_client(engine)
    seen = []
    original = engine.generate

    def spy(request):
        seen.append(engine.detokenize(request.prompt_tokens))
        return original(request)

    engine.generate = spy
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
    ]
    await client.http.post("/v1/chat/completions", json={"messages": messages})
    assert seen == ["<start_of_turn>user\nBe brief.\n\nHi\nthere<end_of_turn>\n<start_of_turn>model\n"]


async def test_template_end_of_turn_marker_stops_generation(make_client):
    client = make_client(FakeEngine(model_id=GEMMA_TEMPLATE_MODEL, script="Sure.<end_of_turn>\n<start_of_turn>user"))
    body = (await client.http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hi"}]})).json()
    assert body["choices"][0]["message"]["content"] == "Sure."


async def test_stream_role_first_finish_last_usage_opt_in(make_client, spec):
    client = make_client(FakeEngine(script="a b c"))
    payload = {
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    response = await client.http.post("/v1/chat/completions", json=payload)
    chunks, done = parse_sse(response.text)
    assert done
    for chunk in chunks:
        spec.validate("CreateChatCompletionStreamResponse", chunk)
        assert chunk["object"] == "chat.completion.chunk"
    *body, usage_chunk = chunks
    assert body[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in body[1:])
    assert [c["choices"][0]["finish_reason"] for c in body] == [None] * (len(body) - 1) + ["stop"]
    assert body[-1]["choices"][0]["delta"] == {}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in body) == "a b c"
    assert all(c["usage"] is None for c in body)
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 6
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1


async def test_stream_without_include_usage_has_no_usage_field(make_client):
    client = make_client(FakeEngine(script="x"))
    payload = {"messages": [{"role": "user", "content": "Hi"}], "stream": True}
    chunks, _ = parse_sse((await client.http.post("/v1/chat/completions", json=payload)).text)
    assert all("usage" not in c for c in chunks)


async def test_max_completion_tokens_wins(make_client):
    client = make_client(FakeEngine(script="abcdefghij"))
    payload = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "max_completion_tokens": 3}
    body = (await client.http.post("/v1/chat/completions", json=payload)).json()
    assert body["usage"]["completion_tokens"] == 3 and body["choices"][0]["finish_reason"] == "length"


async def test_official_client_chat_and_stream(make_client):
    client = make_client(FakeEngine(script="Bonjour!"))
    oai = client.openai()
    result = await oai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "Hi"}])
    assert result.choices[0].message.content == "Bonjour!"
    stream = await oai.chat.completions.create(
        model="fake-model", messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "Hi"}], stream=True
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Bonjour!"


async def test_assistant_tool_call_history_and_tool_results_are_accepted(make_client):
    client = make_client(FakeEngine(script="done"))
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    response = await client.http.post("/v1/chat/completions", json={"messages": messages})
    assert response.status_code == 200
