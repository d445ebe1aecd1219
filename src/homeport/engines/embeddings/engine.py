"""Embedding and rerank models as engines the model manager holds like any other: an `Embedder` or
`Reranker` behind micro-batching, on a worker thread of its own (engines/runtime/batcher.py)."""

from __future__ import annotations

from array import array
from collections.abc import Callable, Sequence

from homeport.engines.base import GenerationStats, ModelInfo
from homeport.engines.embeddings.base import Embedder, Reranker
from homeport.engines.runtime import MicroBatcher
from homeport.errors import EngineError

Text = str | list[int]  # a text, or token ids of the embedding model to decode


class _BatchedEngine:
    """What the model manager needs of an engine whose work is one micro-batcher (`_batcher`)."""

    _batcher: MicroBatcher

    def stats(self) -> GenerationStats:
        return GenerationStats(queued=self._batcher.queued)

    def effective_args(self) -> dict:
        return {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._batcher.close()

    def close_now(self) -> None:
        self._batcher.close()


class EmbeddingEngine(_BatchedEngine):
    """The `Embedding` capability: `embed` gives (model id, unit vectors, token counts)."""

    def __init__(self, load: Callable[[], Embedder], *, loader: str = "sentence-transformers",
                 max_batch_texts: int = 256) -> None:
        """`load` builds the embedder (blocking; may raise a HomeportError such as a 503): on first
        use, in the worker thread, and again after a failure."""
        self.loader = loader
        self._batcher: MicroBatcher[Embedder, Text, tuple[list[float], int]] = MicroBatcher(
            load, _embed_batch, what="embedding model", max_items=max_batch_texts
        )
        self.info = ModelInfo(model_id="", context_length=0, loader=loader)

    @classmethod
    def of(cls, embedder: Embedder, *, loader: str) -> EmbeddingEngine:
        engine = cls(lambda: embedder, loader=loader)
        engine.info = ModelInfo(model_id=embedder.model_id, context_length=embedder.max_tokens, loader=loader)
        return engine

    async def embedder(self) -> Embedder:
        return await self._batcher.model()

    async def embed(self, inputs: Sequence[Text]) -> tuple[str, list[list[float]], list[int]]:
        embedder = await self.embedder()
        results = await self._batcher.submit(inputs)
        return embedder.model_id, [vector for vector, _ in results], [count for _, count in results]

    def counters(self) -> dict:
        """Batches run and texts embedded (no text)."""
        return {"batches": self._batcher.batches, "texts": self._batcher.items, "queued": self._batcher.queued}


class RerankEngine(_BatchedEngine):
    """The `Reranking` capability: `score` gives (model id, one score and token count per pair)."""

    def __init__(self, load: Callable[[], Reranker], *, loader: str = "cross-encoder",
                 max_batch_pairs: int = 256) -> None:
        self.loader = loader
        self._batcher: MicroBatcher[Reranker, tuple[str, str], tuple[float, int]] = MicroBatcher(
            load, _score_batch, what="rerank model", max_items=max_batch_pairs
        )
        self.info = ModelInfo(model_id="", context_length=0, loader=loader)

    @classmethod
    def of(cls, reranker: Reranker, *, loader: str) -> RerankEngine:
        engine = cls(lambda: reranker, loader=loader)
        engine.info = ModelInfo(model_id=reranker.model_id, context_length=reranker.max_tokens, loader=loader)
        return engine

    async def score(self, pairs: Sequence[tuple[str, str]]) -> tuple[str, list[float], list[int]]:
        reranker = await self._batcher.model()
        results = await self._batcher.submit(list(pairs))
        return reranker.model_id, [score for score, _ in results], [count for _, count in results]


def _embed_batch(embedder: Embedder, inputs: list[Text]) -> list[tuple[list[float], int]]:
    """In the worker thread: decode token ids, count tokens, embed."""
    texts = [item if isinstance(item, str) else embedder.detokenize(item) for item in inputs]
    counts = embedder.count_tokens(texts)
    vectors = embedder.embed(texts)
    if len(vectors) != len(texts) or len(counts) != len(texts):
        raise EngineError("The embedding model returned the wrong number of embeddings.")
    return [(float32(vector), count) for vector, count in zip(vectors, counts)]


def _score_batch(reranker: Reranker, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
    """In the worker thread: count tokens and score every pair."""
    counts = reranker.count_tokens(pairs)
    scores = reranker.score(pairs)
    if len(scores) != len(pairs) or len(counts) != len(pairs):
        raise EngineError("The rerank model returned the wrong number of scores.")
    return list(zip(scores, counts))


def float32(vector: Sequence[float]) -> list[float]:
    # What OpenAI sends: float32 values. Rounding here makes the float and base64 outputs equal.
    return array("f", vector).tolist()
