"""Embeddings, moderations and rerank through the real server and the official client."""

from __future__ import annotations

import base64
import math
import struct
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_with_the_official_client(client):
    texts = ["The ship docked at the harbour.", "A vessel arrived in port.", "I baked a chocolate cake."]
    result = client.embeddings.create(model="text-embedding-3-small", input=texts)
    vectors = [item.embedding for item in sorted(result.data, key=lambda d: d.index)]
    assert all(len(v) == 384 for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert result.usage.prompt_tokens > 0 and result.usage.total_tokens == result.usage.prompt_tokens
    # asked for explicitly, base64 comes back raw: little-endian float32
    raw = client.embeddings.create(model="m", input=texts[0], encoding_format="base64").data[0].embedding
    as_b64 = list(struct.unpack(f"<{len(base64.b64decode(raw)) // 4}f", base64.b64decode(raw)))
    as_float = client.embeddings.create(model="m", input=texts[0], encoding_format="float").data[0].embedding
    assert as_b64 == pytest.approx(as_float, abs=1e-6)
    assert as_float == pytest.approx(vectors[0], abs=1e-5)  # batched and alone: the same vector
    short = client.embeddings.create(model="m", input=texts[0], dimensions=64).data[0].embedding
    assert len(short) == 64 and sum(x * x for x in short) == pytest.approx(1.0, abs=1e-4)


def test_empty_input_is_400(client):
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model="m", input="")


def test_concurrent_embedding_requests(client):
    texts = [f"Sentence number {i} about ships." for i in range(24)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: client.embeddings.create(model="m", input=t).data[0].embedding, texts))
    assert all(len(v) == 384 for v in results)
    assert results[0] != results[1]


def test_moderations_and_rerank(server, client, spec):
    result = client.moderations.create(input=["I will hurt you badly.", "The weather is nice today."])
    assert len(result.results) == 2
    with server.http() as http:
        raw = http.post("/v1/moderations", json={"input": "Have a lovely day."}).json()
        spec.validate("CreateModerationResponse", raw)
        ranked = http.post("/v1/rerank", json={
            "query": "Where do ships dock?",
            "documents": ["Cakes need flour and sugar.", "Ships dock at the harbour pier.", "Cats sleep a lot."],
            "top_n": 2,
        }).json()
    assert [r["index"] for r in ranked["results"]][0] == 1 and len(ranked["results"]) == 2
