"""Images through a real `homeport serve --mmproj` on the default model, driven by the official
client. No vision model is packaged: the projector is a tiny random-weight one built here for the
model (tests/support/tiny_mmproj.py), so answers are noise but every path is the real one."""

from __future__ import annotations

import math

import openai
import pytest

from support.png import CHECKS, GRADIENT, data_url
from support.server import API_KEY, GEMMA_MODEL_ID, start_server, stop_server
from support.tiny_mmproj import TOKENS_PER_IMAGE, write_tiny_mmproj

LONG_TAIL = " ".join(f"Sentence number {i} about the picture above." for i in range(40))


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    (root / "models").mkdir()
    write_tiny_mmproj(root / "models" / "mmproj-tiny.gguf")
    running = start_server(root, "--api-key", API_KEY, "--model-dir", str(root / "models"),
                           "--mmproj", "mmproj-tiny.gguf", "--ctx-size", "1024", "--parallel", "2")
    yield running
    stop_server(running)


def ask(client: openai.OpenAI, *parts, **options):
    content = [{"type": "image_url", "image_url": {"url": data_url(p)}} if isinstance(p, bytes)
               else {"type": "text", "text": p} for p in parts]
    return client.chat.completions.create(model=GEMMA_MODEL_ID, messages=[{"role": "user", "content": content}],
                                          max_tokens=options.pop("max_tokens", 4), temperature=0, **options)


def test_an_image_is_part_of_the_prompt(vision_server):
    client = vision_server.openai()
    with_image = ask(client, "Describe", GRADIENT, "briefly.")
    without = ask(client, "Describe", "briefly.")
    assert isinstance(with_image.choices[0].message.content, str)
    # the image's embeddings took their positions (plus the begin/end-of-image tokens)
    assert with_image.usage.prompt_tokens - without.usage.prompt_tokens >= TOKENS_PER_IMAGE
    # and the model saw them: another picture gives another next-token distribution
    first = ask(client, "Describe", GRADIENT, "briefly.", logprobs=True, top_logprobs=3, max_tokens=1)
    second = ask(client, "Describe", CHECKS, "briefly.", logprobs=True, top_logprobs=3, max_tokens=1)
    distribution = lambda r: [(t.token, round(t.logprob, 4)) for t in r.choices[0].logprobs.content[0].top_logprobs]
    assert distribution(first) != distribution(second)
    assert all(math.isfinite(lp) for _, lp in distribution(first))
    assert distribution(first) == distribution(ask(client, "Describe", GRADIENT, "briefly.", logprobs=True,
                                                   top_logprobs=3, max_tokens=1))


def test_a_repeated_image_is_served_from_the_prefix_cache(vision_server):
    client = vision_server.openai()
    fresh = ask(client, "Look:", GRADIENT, LONG_TAIL, max_tokens=8)
    again = ask(client, "Look:", GRADIENT, LONG_TAIL, max_tokens=8)
    other = ask(client, "Look:", CHECKS, LONG_TAIL, max_tokens=8)
    assert again.usage.prompt_tokens_details.cached_tokens >= 128  # the image's KV was reused
    assert other.usage.prompt_tokens_details.cached_tokens < 16  # another image: nothing after it
    assert again.choices[0].message.content == fresh.choices[0].message.content


def test_streaming_with_an_image_and_refusals(vision_server):
    client = vision_server.openai()
    stream = client.chat.completions.create(
        model=GEMMA_MODEL_ID, stream=True, max_tokens=6, temperature=0,
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(CHECKS)}},
                                                {"type": "text", "text": "What is it?"}]}],
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.BadRequestError, match="never fetches"):
        client.chat.completions.create(model=GEMMA_MODEL_ID, max_tokens=2, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    with pytest.raises(openai.BadRequestError, match="could not be decoded"):
        ask(client, "x", b"not an image at all")
    with vision_server.http() as http:
        info = http.get("/v1/internal/model/info").json()
    assert info["args"]["mmproj"].endswith("mmproj-tiny.gguf")
    assert ask(client, "still serving").choices[0].message.content is not None
