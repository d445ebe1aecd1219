"""/v1/rerank (and /rerank): documents ordered by relevance to a query, in the shape llama.cpp's
server and vLLM use (also Jina's and Cohere's): {id, model, results: [{index, relevance_score,
document?}], usage: {total_tokens}}.

Two scorers:
- By default, relevance is the cosine similarity of the query's and each document's embedding (a
  bi-encoder, in [-1, 1]): good at putting the relevant documents first, not a calibrated score.
- With a `rerank_model` (a cross-encoder folder), the model reads the query and each document
  together, which ranks markedly better. Its score is what sentence-transformers' `predict` gives,
  and vLLM too: the logit through the activation the model's folder configures, the sigmoid (in
  [0, 1], like Cohere's and Jina's scores) unless it says otherwise (the ms-marco models keep the raw
  logit, which llama.cpp's server always returns). Following the folder keeps each model's own
  calibration; the order is the same either way.

The cross-encoder loads on first use, in its own worker thread (never on the event loop), and runs
one batch at a time there: requests waiting while a batch runs are scored together in the next.
`usage` counts the tokens the model read: the query and document of every pair, special tokens included.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING

from homeport.engines.embeddings import Reranker, RerankerConfig, load_reranker, reranker_path
from homeport.engines.runtime import MicroBatcher
from homeport.errors import EngineError, InvalidRequestError
from homeport.schemas.embeddings import RerankRequest
from homeport.services.embeddings.embeddings import MAX_INPUTS, EmbeddingService
from homeport.services.ids import new_id

if TYPE_CHECKING:
    from homeport.registry.manager import ModelManager


@dataclass(frozen=True)
class Scored:
    """Relevance of each document to a query, in document order, and what reading them cost."""

    model_id: str
    scores: list[float]
    total_tokens: int


class RerankService:
    """Fixed scorers (`cross_encoder`, else the embeddings' similarity), or with `models` the
    manager's: the request's `model` names a rerank model (scored by it) or an embedding model
    (similarity); none or an unknown name means the default rerank model when one is configured
    (`--rerank-model`), else the default embedding model."""

    def __init__(self, embeddings: EmbeddingService, cross_encoder: CrossEncoderService | None = None, *,
                 models: ModelManager | None = None) -> None:
        self.embeddings = embeddings
        self._cross_encoder = cross_encoder
        self._models = models

    @property
    def cross_encoder(self) -> CrossEncoderService | str | None:
        """The default cross-encoder (its model id with the manager's models); None: rank by similarity."""
        if self._models is not None:
            default = self._models.defaults.get("rerank")
            return default if isinstance(default, str) else None
        return self._cross_encoder

    async def create(self, body: RerankRequest) -> dict:
        if not body.query:
            raise InvalidRequestError("'query' must not be empty.", param="query")
        documents = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
        if not documents:
            raise InvalidRequestError("'documents' must not be an empty list.", param="documents")
        if len(documents) > MAX_INPUTS:
            raise InvalidRequestError(
                f"'documents' may hold at most {MAX_INPUTS} items, got {len(documents)}.", param="documents"
            )
        scored = await self._score(body.model, body.query, documents)
        ranked = sorted(enumerate(scored.scores), key=lambda pair: pair[1], reverse=True)  # stable: ties keep order
        results = []
        for index, score in ranked[: body.top_n]:
            result: dict = {"index": index, "relevance_score": score}
            if body.return_documents:
                result["document"] = {"text": documents[index]}
            results.append(result)
        return {
            "id": new_id("rerank"),
            "object": "list",
            "model": scored.model_id,
            "results": results,
            "usage": {"prompt_tokens": scored.total_tokens, "total_tokens": scored.total_tokens},
        }

    def close(self) -> None:
        if self._cross_encoder is not None:
            self._cross_encoder.close()

    async def _score(self, name: str | None, query: str, documents: list[str]) -> Scored:
        if self._models is None:
            if self._cross_encoder is not None:
                return await self._cross_encoder.score(query, documents)
            return await self._by_similarity(None, query, documents)
        entry = await self._models.entry(name)
        if entry is not None and entry.kind == "embedding":
            return await self._by_similarity(name, query, documents)
        if (entry is not None and entry.kind == "rerank") or self.cross_encoder is not None:
            async with self._models.using(name, "rerank") as model:
                model_id, scores, counts = await model.engine.score([(query, document) for document in documents])
            return Scored(model_id, scores, sum(counts))
        return await self._by_similarity(name, query, documents)

    async def _by_similarity(self, name: str | None, query: str, documents: list[str]) -> Scored:
        embedded = await self.embeddings.embed([query, *documents], name)
        query_vector, *vectors = embedded.vectors
        scores = [sum(q * d for q, d in zip(query_vector, vector)) for vector in vectors]
        return Scored(embedded.model_id, scores, embedded.total_tokens)


class CrossEncoderService:
    """A cross-encoder behind micro-batching, on one worker thread of its own."""

    def __init__(self, load: Callable[[], Reranker], *, max_batch_pairs: int = 256) -> None:
        """`load` builds the reranker (blocking, slow; may raise a HomeportError such as a 503); it is
        called in the worker thread on first use, and again after a failure."""
        self._batcher: MicroBatcher[Reranker, tuple[str, str], tuple[float, int]] = MicroBatcher(
            load, _score_batch, what="rerank model", max_items=max_batch_pairs
        )

    @classmethod
    def from_config(cls, config: RerankerConfig, **kwargs) -> CrossEncoderService:
        """The configured cross-encoder. Its folder is checked now (a bad one is a StartupError);
        the weights load on first use."""
        path = reranker_path(config)
        return cls(lambda: load_reranker(config, path), **kwargs)

    async def score(self, query: str, documents: Sequence[str]) -> Scored:
        reranker = await self._batcher.model()
        results = await self._batcher.submit([(query, document) for document in documents])
        return Scored(reranker.model_id, [score for score, _ in results], sum(count for _, count in results))

    def close(self) -> None:
        self._batcher.close()


def _score_batch(reranker: Reranker, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
    """In the worker thread: count tokens and score every pair."""
    counts = reranker.count_tokens(pairs)
    scores = reranker.score(pairs)
    if len(scores) != len(pairs) or len(counts) != len(pairs):
        raise EngineError("The rerank model returned the wrong number of scores.")
    return list(zip(scores, counts))
