"""/v1/completions with `messages` (the reference API's multimodal form): the text parts joined
with no template, each <__media__> replaced by the next image; and what is refused."""

from __future__ import annotations

import pytest

from homeport.engines.fake import IMAGE_TOKENS, FakeEngine
from support.image_server import image_server
from support.png import CHECKS, GRADIENT, data_url
from support.sse import parse_sse

COMPLETIONS = "/v1/completions"


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def image(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def seed_example(first: str, second: str) -> dict:
    """The reference's example, with its images' URLs replaced."""
    parts = [text("About image <__media__> and image <__media__>, what I can say is that the first one"),
             image(first), image(second)]
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 32}


def visible(engine: FakeEngine, tokens: list[int]) -> str:
    return engine.detokenize([t for t in tokens if t >= 0])


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(vision=True, script="is a gradient.")


async def test_the_seed_example_puts_each_image_at_its_marker(make_client, engine, spec):
    client = make_client(engine)
    response = await client.http.post(COMPLETIONS, json=seed_example(data_url(GRADIENT), data_url(CHECKS)))
    assert response.status_code == 200, response.text
    body = response.json()
    spec.validate("CreateCompletionResponse", body)
    assert body["choices"][0]["text"] == "is a gradient."
    request = engine.requests[-1]
    first, second = request.media.segments
    assert (first.image, second.image) == (GRADIENT, CHECKS)
    tokens = request.prompt_tokens
    assert visible(engine, tokens[:first.start]) == "About image "  # no chat template around it
    assert visible(engine, tokens[first.start + IMAGE_TOKENS:second.start]) == " and image "
    assert visible(engine, tokens[second.start + IMAGE_TOKENS:]).startswith(", what I can say")
    assert body["usage"]["prompt_tokens"] == len(tokens)


async def test_text_parts_and_string_contents_are_joined_as_they_are(make_client, engine):
    client = make_client(engine)
    messages = [{"role": "system", "content": "One."}, {"role": "user", "content": [text("Two"), text(" three")]}]
    response = await client.http.post(COMPLETIONS, json={"messages": messages, "max_tokens": 2})
    assert response.status_code == 200, response.text
    assert engine.requests[-1].media is None
    assert visible(engine, engine.requests[-1].prompt_tokens) == "One.Two three"


async def test_a_text_only_messages_prompt_echoes_like_a_prompt(make_client, engine):
    client = make_client(engine)
    messages = [{"role": "user", "content": "Once upon"}]
    body = (await client.http.post(COMPLETIONS, json={"messages": messages, "echo": True, "logprobs": 1,
                                                      "max_tokens": 3})).json()
    assert body["choices"][0]["text"].startswith("Once upon")
    assert body["choices"][0]["logprobs"]["tokens"][:2] == ["O", "n"]


async def test_echo_shows_the_markers(make_client, engine):
    client = make_client(engine)
    body = seed_example(data_url(GRADIENT), data_url(CHECKS)) | {"echo": True}
    choice = (await client.http.post(COMPLETIONS, json=body)).json()["choices"][0]
    assert choice["text"] == body["messages"][0]["content"][0]["text"] + "is a gradient."


async def test_streaming_with_images(make_client, engine):
    client = make_client(engine)
    body = seed_example(data_url(GRADIENT), data_url(CHECKS)) | {"stream": True}
    chunks, done = parse_sse((await client.http.post(COMPLETIONS, json=body)).text)
    assert done and "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "is a gradient."
    assert len(engine.requests[-1].media.segments) == 2


async def test_n_choices_share_the_images(make_client, engine):
    client = make_client(engine)
    body = seed_example(data_url(GRADIENT), data_url(CHECKS)) | {"n": 2}
    response = await client.http.post(COMPLETIONS, json=body)
    assert response.status_code == 200 and len(response.json()["choices"]) == 2


@pytest.mark.parametrize(
    "payload,param,needle",
    [
        ({"prompt": "x", "messages": [{"role": "user", "content": "y"}]}, "prompt", "exactly one"),
        ({"max_tokens": 4}, "prompt", "exactly one"),
        ({"messages": [{"role": "user", "content": [text("one <__media__>"), image(data_url(GRADIENT)),
                                                    image(data_url(CHECKS))]}]}, "messages", "1 <__media__> marker(s)"),
        ({"messages": [{"role": "user", "content": [text("no marker"), image(data_url(GRADIENT))]}]},
         "messages", "0 <__media__> marker(s) but the messages hold 1"),
        ({"messages": [{"role": "user", "content": "a marker <__media__> and no image"}]}, "messages", "marker"),
        ({"messages": [{"role": "user", "content": "\ue000image:0\ue001"}]}, "messages", "reserved"),
        ({"messages": [{"role": "user", "content": [text("<__media__>"), image(data_url(GRADIENT))]}],
          "suffix": "end"}, "suffix", "suffix"),
        ({"messages": [{"role": "user", "content": [text("<__media__>"), image(data_url(GRADIENT))]}],
          "echo": True, "logprobs": 2}, "echo", "echo"),
        ({"messages": [{"role": "user", "content": [text("<__media__>"), image("data:image/png;base64,@@")]}]},
         "messages[0].content[1].image_url", "not valid"),
        ({"messages": [{"role": "user", "content": [text("<__media__>"), image("https://example.com/cat.png")]}]},
         "messages[0].content[1].image_url", "--allow-remote-media"),
        ({"messages": []}, "messages", ""),
    ],
)
async def test_refused_requests_are_400s_naming_the_field(make_client, engine, spec, payload, param, needle):
    client = make_client(engine)
    response = await client.http.post(COMPLETIONS, json=payload)
    assert response.status_code == 400, response.text
    spec.validate("ErrorResponse", response.json())
    error = response.json()["error"]
    assert error["param"] == param and needle in error["message"], error
    assert engine.requests == []


async def test_an_image_the_engine_refuses_names_the_messages(make_client, engine):
    client = make_client(engine)
    response = await client.http.post(COMPLETIONS, json=seed_example(data_url(GRADIENT), data_url(b"GIF89a nope")))
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "messages" and "could not be decoded" in error["message"]


async def test_a_model_without_vision_gives_chats_400(make_client):
    client = make_client(FakeEngine())
    response = await client.http.post(COMPLETIONS, json=seed_example(data_url(GRADIENT), data_url(CHECKS)))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "does not accept images" in error["message"] and error["param"] == "messages[0].content[1].image_url"


async def test_too_long_for_the_context_is_a_400(make_client):
    engine = FakeEngine(vision=True, context_length=40)
    client = make_client(engine)
    parts = [text("x" * 60 + "<__media__>"), image(data_url(GRADIENT))]
    response = await client.http.post(COMPLETIONS, json={"messages": [{"role": "user", "content": parts}]})
    assert response.status_code == 400 and engine.requests == []


async def test_remote_images_follow_the_same_policy(make_client, engine):
    with image_server() as server:
        client = make_client(engine, allow_remote_media=True, remote_media_allow_private=True)
        body = seed_example(server.url("/cat.png"), server.url("/checks.png"))
        response = await client.http.post(COMPLETIONS, json=body)
        assert response.status_code == 200, response.text
        assert [s.image for s in engine.requests[-1].media.segments] == [GRADIENT, CHECKS]
        offline = make_client(engine)
        response = await offline.http.post(COMPLETIONS, json=body)
        assert response.status_code == 400 and "--allow-remote-media" in response.json()["error"]["message"]
