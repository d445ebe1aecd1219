"""Embeddings, moderations and rerank over the fake hashing embedder, in-process over HTTP."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import sys
from types import SimpleNamespace

import httpx
import openai
import pytest

from homeport.settings import load_settings
from fastapi import FastAPI

from homeport.api.errors import install_error_handlers
from homeport.api.routes import embeddings as embedding_routes
from homeport.engines.embeddings import EmbedderConfig, FakeEmbedder, load_embedder
from homeport.engines.embeddings.base import Embedder, EmbedderUnavailableError
from homeport.engines.embeddings.llama_cpp import LlamaCppEmbedder
from homeport.errors import StartupError
from homeport.services.embeddings.embeddings import EmbeddingService
from homeport.services.embeddings.moderations import CATEGORY_NAMES, ModerationService
from homeport.services.embeddings.rerank import RerankService


class Client:
    def __init__(self, embedder: FakeEmbedder | None = None, *, load=None, threshold: float = 0.5) -> None:
        self.embedder = embedder or FakeEmbedder()
        self.loads = 0

        def default_load() -> Embedder:
            self.loads += 1
            return self.embedder

        self.service = EmbeddingService(load or default_load)
        app = FastAPI()
        install_error_handlers(app)
        app.include_router(embedding_routes.router)
        app.state.services = SimpleNamespace(
            embeddings=self.service,
            moderations=ModerationService(self.service, threshold=threshold),
            rerank=RerankService(self.service),
        )
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")

    def openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url="http://localhost/v1", api_key="sk-test", http_client=self.http, max_retries=0
        )

    async def embed(self, **body) -> httpx.Response:
        body.setdefault("model", "text-embedding-3-small")
        return await self.http.post("/v1/embeddings", json=body)


@pytest.fixture
async def client():
    made = Client()
    yield made
    await made.http.aclose()
    made.service.close()


def _norm(vector) -> float:
    return math.sqrt(sum(v * v for v in vector))


def _cos(a, b) -> float:
    return sum(x * y for x, y in zip(a, b))


def _decode(b64: str) -> list[float]:
    raw = base64.b64decode(b64)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


# ---- /v1/embeddings -----------------------------------------------------------------------------


async def test_single_string_has_openai_shape_and_real_usage(client, spec):
    response = await client.embed(input="the cat sat on the mat")
    assert response.status_code == 200
    body = response.json()
    spec.validate("CreateEmbeddingResponse", body)
    assert body["model"] == "fake-embedder"
    (item,) = body["data"]
    assert item["index"] == 0 and item["object"] == "embedding"
    assert len(item["embedding"]) == 64
    assert _norm(item["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert body["usage"] == {"prompt_tokens": 22, "total_tokens": 22}  # 22 UTF-8 bytes


async def test_list_of_strings_keeps_order_and_sums_usage(client):
    texts = ["alpha beta", "gamma", "héllo wörld"]
    body = (await client.embed(input=texts)).json()
    assert [item["index"] for item in body["data"]] == [0, 1, 2]
    alone = [(await client.embed(input=text)).json()["data"][0]["embedding"] for text in texts]
    assert [item["embedding"] for item in body["data"]] == alone
    assert body["usage"]["prompt_tokens"] == sum(len(t.encode()) for t in texts)


async def test_similar_texts_are_closer(client):
    body = (await client.embed(input=["red apple pie", "red apple tart", "quantum tax law"])).json()
    a, b, c = (item["embedding"] for item in body["data"])
    assert _cos(a, b) > _cos(a, c)


async def test_base64_is_little_endian_float32_of_the_float_output(client, spec):
    text = ["the cat sat", "on the mat"]
    floats = (await client.embed(input=text)).json()
    encoded = (await client.embed(input=text, encoding_format="base64")).json()
    spec.validate("CreateEmbeddingResponse", floats)
    for f_item, b_item in zip(floats["data"], encoded["data"]):
        assert isinstance(b_item["embedding"], str)
        assert _decode(b_item["embedding"]) == f_item["embedding"]  # exactly: both are float32


async def test_official_client_default_base64_round_trip(client):
    # The openai client asks for base64 by default and decodes it itself.
    result = await client.openai().embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    direct = (await client.embed(input=["one two", "three"])).json()
    for got, expected in zip(result.data, direct["data"], strict=True):
        assert list(got.embedding) == pytest.approx(expected["embedding"])
    assert result.usage.prompt_tokens == 12


async def test_dimensions_truncates_and_renormalizes(client):
    full = (await client.embed(input="some words to embed here")).json()["data"][0]["embedding"]
    short = (await client.embed(input="some words to embed here", dimensions=8)).json()["data"][0]["embedding"]
    assert len(short) == 8
    assert _norm(short) == pytest.approx(1.0, abs=1e-5)
    head_norm = _norm(full[:8])
    assert short == pytest.approx([v / head_norm for v in full[:8]], abs=1e-6)
    same = (await client.embed(input="some words to embed here", dimensions=64)).json()["data"][0]["embedding"]
    assert same == full
    b64 = (await client.embed(input="some words", dimensions=8, encoding_format="base64")).json()
    assert len(_decode(b64["data"][0]["embedding"])) == 8


@pytest.mark.parametrize("dimensions", [65, 4096])
async def test_dimensions_larger_than_the_model_is_400(client, dimensions):
    response = await client.embed(input="x", dimensions=dimensions)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "dimensions" and "64" in error["message"]


async def test_dimensions_below_one_is_400(client):
    response = await client.embed(input="x", dimensions=0)
    assert response.status_code == 400 and response.json()["error"]["param"] == "dimensions"


@pytest.mark.parametrize("bad", ["", [], [""], ["ok", ""], [[]], [[1], []]])
async def test_empty_input_is_400_naming_input(client, bad):
    response = await client.embed(input=bad)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "input"
    assert client.embedder.batches == []  # nothing reached the model


@pytest.mark.parametrize("bad", [["a", 1], [1.5], 3, None, {"text": "x"}, [True]])
async def test_malformed_input_is_400(client, bad):
    response = await client.embed(input=bad)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


async def test_missing_input_and_bad_encoding_format_are_400(client):
    missing = await client.http.post("/v1/embeddings", json={"model": "m"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    bad = await client.embed(input="x", encoding_format="int8")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "encoding_format"


async def test_token_ids_are_decoded_with_the_model_tokenizer(client):
    text = "hello world"
    ids = list(text.encode())  # the fake embedder's tokens are UTF-8 bytes
    as_text = (await client.embed(input=text)).json()
    as_ids = (await client.embed(input=ids)).json()
    as_id_lists = (await client.embed(input=[ids, list(b"other")])).json()
    assert as_ids["data"][0]["embedding"] == as_text["data"][0]["embedding"]
    assert as_id_lists["data"][0]["embedding"] == as_text["data"][0]["embedding"]
    assert len(as_id_lists["data"]) == 2
    assert as_ids["usage"] == as_text["usage"]


async def test_token_ids_outside_the_vocabulary_are_400(client):
    response = await client.embed(input=[[1, 2, 999]])
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input" and "999" in response.json()["error"]["message"]
    negative = await client.embed(input=[-1])
    assert negative.status_code == 400


async def test_unknown_fields_are_accepted(client):
    response = await client.embed(input="x", user="u1", some_new_field={"a": 1})
    assert response.status_code == 200


async def test_model_loads_lazily_once(client):
    assert client.loads == 0
    await asyncio.gather(*(client.embed(input=f"text {i}") for i in range(5)))
    assert client.loads == 1


async def test_concurrent_requests_are_batched_together():
    client = Client(FakeEmbedder(delay=0.05))
    try:
        responses = await asyncio.gather(*(client.embed(input=[f"request {i}", f"second {i}"]) for i in range(20)))
        assert all(r.status_code == 200 for r in responses)
        # The first request runs alone; the 19 that arrived while it ran share the next batch.
        assert len(client.embedder.batches) < 20
        assert sum(client.embedder.batches) == 40
        assert max(client.embedder.batches) > 2
        assert client.service.stats()["batches"] == len(client.embedder.batches)
        # Batched results are each request's own, in order.
        for i, response in enumerate(responses):
            alone = client.embedder.embed([f"request {i}", f"second {i}"])
            for got, expected in zip(response.json()["data"], alone, strict=True):
                assert got["embedding"] == pytest.approx(expected)
            assert response.json()["usage"]["prompt_tokens"] == len(f"request {i}") + len(f"second {i}")
    finally:
        await client.http.aclose()
        client.service.close()


async def test_batches_respect_the_size_cap():
    embedder = FakeEmbedder(delay=0.02)
    service = EmbeddingService(lambda: embedder, max_batch_texts=4)
    try:
        results = await asyncio.gather(*(service.embed([f"t{i}", f"u{i}"]) for i in range(10)))
        assert all(len(r.vectors) == 2 for r in results)
        assert max(embedder.batches) <= 4 and sum(embedder.batches) == 20
    finally:
        service.close()


async def test_embedding_runs_off_the_event_loop():
    embedder = FakeEmbedder(delay=0.3)
    service = EmbeddingService(lambda: embedder)
    try:
        task = asyncio.ensure_future(service.embed(["slow"]))
        ticks = 0
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert ticks > 10  # the loop kept running while the model worked
        await task
    finally:
        service.close()


async def test_a_failing_batch_fails_its_requests_with_500_and_the_next_batch_works():
    embedder = FakeEmbedder(fail=True)
    client = Client(embedder)
    try:
        response = await client.embed(input="x")
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "server_error"
        embedder.fail = False
        assert (await client.embed(input="x")).status_code == 200
    finally:
        await client.http.aclose()
        client.service.close()


async def test_a_cancelled_request_does_not_break_the_batch():
    embedder = FakeEmbedder(delay=0.05)
    service = EmbeddingService(lambda: embedder)
    try:
        first = asyncio.ensure_future(service.embed(["a"]))
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(service.embed(["b"]))
        kept = asyncio.ensure_future(service.embed(["c"]))
        await asyncio.sleep(0)
        doomed.cancel()
        await first
        assert len((await kept).vectors) == 1
    finally:
        service.close()


async def test_missing_package_is_503_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now raises ImportError
    client = Client(load=lambda: load_embedder(EmbedderConfig()))
    try:
        response = await client.embed(input="x")
        assert response.status_code == 503
        message = response.json()["error"]["message"]
        assert "homeport[embeddings]" in message and "sentence-transformers" in message
        assert (await client.http.post("/v1/moderations", json={"input": "x"})).status_code == 503
        assert (await client.http.post("/rerank", json={"query": "q", "documents": ["d"]})).status_code == 503
    finally:
        await client.http.aclose()
        client.service.close()


async def test_unexpected_load_failure_is_503_without_details():
    def explode() -> Embedder:
        raise RuntimeError("secret internal path /opt/x")

    client = Client(load=explode)
    try:
        response = await client.embed(input="x")
        assert response.status_code == 503
        assert "secret" not in response.text
    finally:
        await client.http.aclose()
        client.service.close()


# ---- loading configuration ---------------------------------------------------------------------


def test_config_from_the_reference_environment_variables(tmp_path):
    environ = {"OPENEDAI_EMBEDDING_MODEL": "my-model", "OPENEDAI_EMBEDDING_DEVICE": "AUTO"}
    settings = load_settings({"user_data_dir": tmp_path}, environ, None)
    assert (settings.embedding_model, settings.embedding_device) == ("my-model", "auto")
    assert load_settings({"user_data_dir": tmp_path}, {}, None).embedding_model is None
    with pytest.raises(StartupError, match="OPENEDAI_EMBEDDING_DEVICE"):
        EmbedderConfig(device="tpu")


def test_unknown_model_name_is_unavailable(tmp_path):
    with pytest.raises(EmbedderUnavailableError, match="not found: nope"):
        load_embedder(EmbedderConfig(model="nope", model_dir=tmp_path))


def test_gguf_under_the_model_dir_goes_to_llama_cpp(tmp_path, monkeypatch):
    (tmp_path / "nomic-embed.gguf").write_bytes(b"")
    seen = {}

    def fake_init(self, path, *, model_id, n_gpu_layers=0, **_):
        seen.update(path=path, model_id=model_id, n_gpu_layers=n_gpu_layers)

    monkeypatch.setattr(LlamaCppEmbedder, "__init__", fake_init)
    embedder = load_embedder(EmbedderConfig(model="nomic-embed", model_dir=tmp_path, device="cuda"))
    assert isinstance(embedder, LlamaCppEmbedder)
    assert seen == {"path": tmp_path / "nomic-embed.gguf", "model_id": "nomic-embed", "n_gpu_layers": -1}


def test_llama_cpp_embedder_pools_and_normalizes_with_a_stub_model():
    class StubLlama:
        n_batch = 8

        def pooling_type(self) -> int:
            return 1  # mean

        def tokenize(self, data: bytes) -> list[int]:
            return list(data)

        def embed(self, texts, normalize, truncate):
            assert truncate
            # A pooled vector for the first text; per-token vectors (pooling none) for the second.
            return [[3.0, 4.0], [[1.0, 0.0], [3.0, 0.0]]]

        def detokenize(self, tokens):
            return bytes(tokens)

    embedder = LlamaCppEmbedder.__new__(LlamaCppEmbedder)
    embedder._llm = StubLlama()
    embedder.max_tokens = 8
    assert embedder.embed(["a", "b"]) == [[0.6, 0.8], [1.0, 0.0]]
    assert embedder.count_tokens(["abc", "x" * 20]) == [3, 8]
    assert embedder.detokenize([104, 105]) == "hi"


def test_llama_cpp_embedder_embeds_unpooled_models_one_text_per_call():
    class UnpooledLlama:
        def __init__(self) -> None:
            self.calls: list = []

        def pooling_type(self) -> int:
            return 0  # none: per-token outputs

        def embed(self, text, normalize, truncate):
            self.calls.append(text)
            return [[0.0, 2.0], [0.0, 4.0]] if text == "a" else [[5.0, 0.0]]

    embedder = LlamaCppEmbedder.__new__(LlamaCppEmbedder)
    embedder._llm = UnpooledLlama()
    assert embedder.embed(["a", "b"]) == [[0.0, 1.0], [1.0, 0.0]]
    assert embedder._llm.calls == ["a", "b"]


def test_fake_embedder_satisfies_the_protocol():
    assert isinstance(FakeEmbedder(), Embedder)


# ---- /v1/moderations ---------------------------------------------------------------------------


async def test_moderation_has_openai_shape(client, spec):
    response = await client.http.post("/v1/moderations", json={"input": ["hello there", "another text"]})
    assert response.status_code == 200
    body = response.json()
    spec.validate("CreateModerationResponse", body)
    assert body["id"].startswith("modr-") and body["model"] == "fake-embedder"
    assert len(body["results"]) == 2
    for result in body["results"]:
        assert set(result["categories"]) == set(CATEGORY_NAMES) == set(result["category_scores"])
        assert all(0.0 <= s <= 1.0 for s in result["category_scores"].values())
        assert result["flagged"] == any(result["categories"].values())


async def test_moderation_flags_text_close_to_a_category_and_threshold_is_configurable():
    # With the hashing embedder, a category's own example phrase scores 1.0 on that category.
    strict = Client(FakeEmbedder(dimensions=4096), threshold=0.99)  # wide: few hash collisions
    lax = Client(threshold=0.0)
    try:
        phrase = "I am going to find you and kill you"
        result = (await strict.http.post("/v1/moderations", json={"input": phrase})).json()["results"][0]
        assert result["category_scores"]["harassment/threatening"] == pytest.approx(1.0)
        assert result["categories"]["harassment/threatening"] is True and result["flagged"] is True
        calm = (await strict.http.post("/v1/moderations", json={"input": "quarterly revenue rose"})).json()
        assert calm["results"][0]["flagged"] is False
        everything = (await lax.http.post("/v1/moderations", json={"input": phrase})).json()["results"][0]
        assert sum(everything["categories"].values()) > 1
    finally:
        for c in (strict, lax):
            await c.http.aclose()
            c.service.close()


async def test_moderation_accepts_text_parts_and_refuses_images(client):
    parts = [{"type": "text", "text": "hello"}]
    assert (await client.http.post("/v1/moderations", json={"input": parts})).status_code == 200
    image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    response = await client.http.post("/v1/moderations", json={"input": image})
    assert response.status_code == 400 and response.json()["error"]["param"] == "input"
    empty = await client.http.post("/v1/moderations", json={"input": []})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"


async def test_moderation_with_the_official_client(client):
    result = await client.openai().moderations.create(input="hello")
    assert result.id.startswith("modr-") and len(result.results) == 1


def test_moderation_threshold_must_be_a_score():
    with pytest.raises(ValueError):
        ModerationService(EmbeddingService(FakeEmbedder), threshold=1.5)


# ---- /v1/rerank --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
async def test_rerank_orders_by_similarity(client, path):
    documents = ["stock market prices", {"text": "a recipe for apple pie"}, "apple pie with cream"]
    response = await client.http.post(path, json={"model": "any", "query": "apple pie", "documents": documents})
    assert response.status_code == 200
    body = response.json()
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(r["index"] for r in body["results"]) == [0, 1, 2]
    assert body["results"][-1]["index"] == 0  # the unrelated document is last
    assert body["results"][-1]["document"] == {"text": "stock market prices"}
    assert body["model"] == "fake-embedder"
    assert body["usage"]["total_tokens"] == len("apple pie") + sum(
        len(d if isinstance(d, str) else d["text"]) for d in documents
    )


async def test_rerank_top_n_and_return_documents(client):
    body = {"query": "apple", "documents": ["apple", "pear", "plum"], "top_n": 1, "return_documents": False}
    result = (await client.http.post("/v1/rerank", json=body)).json()
    assert result["results"] == [{"index": 0, "relevance_score": pytest.approx(1.0)}]
    many = (await client.http.post("/v1/rerank", json={**body, "top_n": 10})).json()
    assert len(many["results"]) == 3


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": "q", "documents": []}, "documents"),
        ({"query": "", "documents": ["d"]}, "query"),
        ({"documents": ["d"]}, "query"),
        ({"query": "q", "documents": ["d"], "top_n": 0}, "top_n"),
        ({"query": "q", "documents": [3]}, "documents[0]"),
    ],
)
async def test_rerank_bad_requests_are_400(client, body, param):
    response = await client.http.post("/v1/rerank", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith(param)
