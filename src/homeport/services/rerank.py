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

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from homeport.engines.embeddings import Reranker, RerankerConfig, load_reranker, reranker_path
from homeport.errors import EngineError, HomeportError, InvalidRequestError, ServiceUnavailableError
from homeport.schemas.embeddings import RerankRequest
from homeport.services.embeddings import MAX_INPUTS, EmbeddingService
from homeport.services.ids import new_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scored:
    """Relevance of each document to a query, in document order, and what reading them cost."""

    model_id: str
    scores: list[float]
    total_tokens: int


class RerankService:
    def __init__(self, embeddings: EmbeddingService, cross_encoder: CrossEncoderService | None = None) -> None:
        self.embeddings = embeddings
        self.cross_encoder = cross_encoder  # None: rank by embedding similarity

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
        if self.cross_encoder is not None:
            scored = await self.cross_encoder.score(body.query, documents)
        else:
            scored = await self._by_similarity(body.query, documents)
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
        if self.cross_encoder is not None:
            self.cross_encoder.close()

    async def _by_similarity(self, query: str, documents: list[str]) -> Scored:
        embedded = await self.embeddings.embed([query, *documents])
        query_vector, *vectors = embedded.vectors
        scores = [sum(q * d for q, d in zip(query_vector, vector)) for vector in vectors]
        return Scored(embedded.model_id, scores, embedded.total_tokens)


@dataclass
class _Job:
    pairs: list[tuple[str, str]]
    future: asyncio.Future


class CrossEncoderService:
    """A cross-encoder behind micro-batching, on one worker thread of its own."""

    def __init__(self, load: Callable[[], Reranker], *, max_batch_pairs: int = 256) -> None:
        """`load` builds the reranker (blocking, slow; may raise a HomeportError such as a 503); it is
        called in the worker thread on first use, and again after a failure."""
        self._load = load
        self._max_batch_pairs = max_batch_pairs
        self._reranker: Reranker | None = None
        self._load_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="homeport-rerank")
        self._pending: deque[_Job] = deque()
        self._worker: asyncio.Task | None = None

    @classmethod
    def from_config(cls, config: RerankerConfig, **kwargs) -> CrossEncoderService:
        """The configured cross-encoder. Its folder is checked now (a bad one is a StartupError);
        the weights load on first use."""
        path = reranker_path(config)
        return cls(lambda: load_reranker(config, path), **kwargs)

    async def score(self, query: str, documents: Sequence[str]) -> Scored:
        loop = asyncio.get_running_loop()
        if self._reranker is None:
            await loop.run_in_executor(self._executor, self._load_once)
        reranker = self._reranker
        assert reranker is not None
        job = _Job([(query, document) for document in documents], loop.create_future())
        self._pending.append(job)
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._worker = loop.create_task(self._drain(), name="homeport-rerank-batches")
        scores, tokens = await job.future
        return Scored(reranker.model_id, scores, tokens)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _load_once(self) -> None:
        with self._load_lock:
            if self._reranker is not None:
                return
            try:
                self._reranker = self._load()
            except HomeportError:
                raise
            except Exception as exc:
                log.error("rerank model failed to load: %s", type(exc).__name__)
                raise ServiceUnavailableError("The rerank model could not be loaded.") from None

    def _next_batch(self) -> list[_Job]:
        batch = [self._pending.popleft()]
        size = len(batch[0].pairs)
        while self._pending and size + len(self._pending[0].pairs) <= self._max_batch_pairs:
            job = self._pending.popleft()
            batch.append(job)
            size += len(job.pairs)
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            batch = [job for job in self._next_batch() if not job.future.done()]  # skip cancelled ones
            if not batch:
                continue
            pairs = [pair for job in batch for pair in job.pairs]
            try:
                scores, counts = await loop.run_in_executor(self._executor, self._run, pairs)
            except Exception as exc:  # every waiting request of the batch gets the error
                error = exc if isinstance(exc, HomeportError) else _engine_error(exc)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in batch:
                end = start + len(job.pairs)
                if not job.future.done():
                    job.future.set_result((scores[start:end], sum(counts[start:end])))
                start = end

    def _run(self, pairs: list[tuple[str, str]]) -> tuple[list[float], list[int]]:
        """In the worker thread: count tokens and score every pair."""
        reranker = self._reranker
        assert reranker is not None
        counts = reranker.count_tokens(pairs)
        scores = reranker.score(pairs)
        if len(scores) != len(pairs) or len(counts) != len(pairs):
            raise EngineError("The rerank model returned the wrong number of scores.")
        return scores, counts


def _engine_error(exc: BaseException) -> EngineError:
    log.error("reranking failed: %s", type(exc).__name__)  # never the text: it may be private
    return EngineError("The rerank model failed to score the documents.")
