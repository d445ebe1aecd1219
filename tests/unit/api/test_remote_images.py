"""Chat with an image by URL, through the app: fetched only with --allow-remote-media (and, for
this loopback server, --remote-media-allow-private); otherwise a 400 naming the flag."""

from __future__ import annotations

import pytest

from homeport.engines.fake import FakeEngine
from support.image_server import image_server
from support.png import GRADIENT

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server():
    with image_server() as running:
        yield running


def body(url: str) -> dict:
    parts = [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 32}


async def test_an_image_url_is_fetched_when_both_flags_are_on(make_client, server, spec):
    engine = FakeEngine(vision=True, script="A gradient.")
    client = make_client(engine, allow_remote_media=True, remote_media_allow_private=True)
    response = await client.http.post(CHAT, json=body(server.url("/cat.png")))
    assert response.status_code == 200, response.text
    spec.validate("CreateChatCompletionResponse", response.json())
    assert response.json()["choices"][0]["message"]["content"] == "A gradient."
    assert [s.image for s in engine.requests[-1].media.segments] == [GRADIENT]


@pytest.mark.parametrize(
    "flags,needle",
    [({}, "--allow-remote-media"), ({"allow_remote_media": True}, "--remote-media-allow-private")],
)
async def test_an_image_url_is_refused_naming_the_flag(make_client, server, spec, flags, needle):
    engine = FakeEngine(vision=True)
    client = make_client(engine, **flags)
    response = await client.http.post(CHAT, json=body(server.url("/cat.png")))
    assert response.status_code == 400, response.text
    spec.validate("ErrorResponse", response.json())
    error = response.json()["error"]
    assert needle in error["message"] and error["param"] == "messages[0].content[1].image_url"
    assert engine.requests == []


async def test_a_failed_fetch_is_a_400_not_a_500(make_client, server):
    client = make_client(FakeEngine(vision=True), allow_remote_media=True, remote_media_allow_private=True)
    response = await client.http.post(CHAT, json=body(server.url("/missing")))
    assert response.status_code == 400 and "HTTP 404" in response.json()["error"]["message"]


async def test_a_model_without_vision_fetches_nothing(make_client, server):
    client = make_client(FakeEngine(), allow_remote_media=True, remote_media_allow_private=True)
    before = len(server.paths)
    response = await client.http.post(CHAT, json=body(server.url("/cat.png")))
    assert response.status_code == 400 and "does not accept images" in response.json()["error"]["message"]
    assert len(server.paths) == before
