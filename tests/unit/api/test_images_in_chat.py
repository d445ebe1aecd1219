"""Image parts in chat messages, on the fake engine with images enabled: what reaches the engine,
and every way an image can be refused (the real projector is tested in tests/integration)."""

from __future__ import annotations

import json

import pytest

from homeport.engines.fake import IMAGE_TOKENS, FakeEngine
from support.png import CHECKS, GRADIENT, data_url

CHAT = "/v1/chat/completions"


def user(*parts) -> dict:
    return {"role": "user", "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(vision=True, script="I see it.")


async def test_an_image_reaches_the_engine_in_place(make_client, engine, spec):
    client = make_client(engine)
    response = await client.http.post(CHAT, json={"messages": [user("What is this?", image(data_url(GRADIENT)))]})
    assert response.status_code == 200, response.text
    spec.validate("CreateChatCompletionResponse", response.json())
    request = engine.requests[-1]
    (segment,) = request.media.segments
    assert segment.image == GRADIENT
    placeholders = request.prompt_tokens[segment.start:segment.start + IMAGE_TOKENS]
    assert len(set(placeholders)) == 1 and placeholders[0] < 0
    before = engine.detokenize([t for t in request.prompt_tokens[:segment.start] if t >= 0])
    assert before.endswith("What is this?\n")  # the image follows the text part, where it was sent
    assert response.json()["usage"]["prompt_tokens"] == len(request.prompt_tokens)


async def test_images_keep_their_order_and_dropped_turns_take_theirs_along(make_client, spec):
    engine = FakeEngine(vision=True, script="ok", context_length=240)
    client = make_client(engine)
    messages = [user("old " * 30, image(data_url(CHECKS))), {"role": "assistant", "content": "fine"},
                user("new", image(data_url(GRADIENT)), image(data_url(CHECKS)))]
    response = await client.http.post(CHAT, json={"messages": messages, "max_tokens": 4})
    assert response.status_code == 200, response.text
    # the first turn did not fit: its image went with it, the last turn's two stayed in order
    assert [s.image for s in engine.requests[-1].media.segments] == [GRADIENT, CHECKS]


async def test_the_chat_prompt_shows_where_images_go(make_client, engine):
    client = make_client(engine)
    body = {"messages": [user("Look:", image(data_url(GRADIENT)))]}
    prompt = (await client.http.post("/v1/internal/chat-prompt", json=body)).json()["prompt"]
    assert "Look:\n<__media__>" in prompt


async def test_streaming_with_an_image(make_client, engine):
    client = make_client(engine)
    body = {"messages": [user(image(data_url(GRADIENT)), "and?")], "stream": True}
    async with client.http.stream("POST", CHAT, json=body) as response:
        assert response.status_code == 200
        lines = [line[6:] async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "I see it."
    assert engine.requests[-1].media is not None


@pytest.mark.parametrize(
    "url,needle",
    [
        ("https://example.com/cat.png", "never fetches"),
        ("file:///etc/passwd", "never fetches"),
        ("data:image/png;base64,@@@", "not valid"),
        ("data:text/plain;base64,aGk=", "expected an image"),
        ("data:image/png;base64,", "empty"),
        ("just some text", "base64 data URL"),
        ("", "needs a url"),
    ],
)
async def test_bad_images_are_400_naming_the_part(make_client, engine, spec, url, needle):
    client = make_client(engine)
    response = await client.http.post(CHAT, json={"messages": [user("x", image(url))]})
    assert response.status_code == 400, response.text
    spec.validate("ErrorResponse", response.json())
    error = response.json()["error"]
    assert needle in error["message"] and error["param"] == "messages[0].content[1].image_url"
    assert engine.requests == []


async def test_an_undecodable_image_is_a_400(make_client, engine):
    client = make_client(engine)
    not_png = data_url(b"GIF89a but not really")
    response = await client.http.post(CHAT, json={"messages": [user("x", image(not_png))]})
    assert response.status_code == 400 and "could not be decoded" in response.json()["error"]["message"]


async def test_an_image_the_engine_refuses_names_the_messages(make_client, engine):
    # the engine's error names no field (engines do not know the wire format); the chat service adds it
    client = make_client(engine)
    response = await client.http.post(CHAT, json={"messages": [user("x", image(data_url(b"GIF89a nope")))]})
    error = response.json()["error"]
    assert response.status_code == 400 and error["type"] == "invalid_request_error"
    assert error["param"] == "messages" and error["message"] == "an image could not be decoded"


async def test_reserved_characters_cannot_forge_an_image(make_client, engine):
    client = make_client(engine)
    response = await client.http.post(CHAT, json={"messages": [{"role": "user", "content": "\ue000image:7\ue001"}]})
    assert response.status_code == 400 and "reserved" in response.json()["error"]["message"]
