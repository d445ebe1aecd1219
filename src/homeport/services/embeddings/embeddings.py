"""/v1/embeddings: OpenAI's request → embedder calls → OpenAI's response, with micro-batching.

- The embedder loads lazily, on first use, in the worker thread: the server starts fast, and
  chat works when torch / sentence-transformers are not installed (embeddings then answer 503).
- Every embedder call (loading, detokenizing, counting, embedding) runs on one worker thread, never
  on the event loop, and one at a time (tokenizers and llama.cpp contexts are not thread-safe).
- Micro-batching: a request that arrives while a batch is running waits, and every request waiting
  when that batch ends is embedded together in the next one (up to `max_batch_texts` texts), so
  many concurrent requests cost a few model calls instead of one each.
- Token-id input is decoded with the embedding model's own tokenizer (ids are that model's
  vocabulary ids, as in vLLM and llama.cpp's server; tiktoken ids from OpenAI's models mean other
  words), then embedded like text; ids outside the vocabulary are a 400.
- Inputs longer than the model's window are truncated to it (as sentence-transformers does);
  `usage.prompt_tokens` counts the tokens actually embedded, special tokens included.
"""

from __future__ import annotations

import base64
import contextlib
import math
import sys
from array import array
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from homeport.engines.embeddings import EmbedderConfig, load_embedder
from homeport.engines.embeddings.base import Embedder
from homeport.engines.embeddings.engine import EmbeddingEngine, Text, float32
from homeport.errors import InvalidRequestError
from homeport.schemas.embeddings import EmbeddingRequest

if TYPE_CHECKING:
    from homeport.registry.manager import ModelManager

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


@dataclass(frozen=True)
class Embedded:
    """The result of one `embed` call: a unit vector and a token count per input."""

    model_id: str
    vectors: list[list[float]]
    token_counts: list[int]

    @property
    def total_tokens(self) -> int:
        return sum(self.token_counts)


class EmbeddingService:
    """Either one fixed embedder (`load`: tests, tools) or the model manager's embedding models
    (`models`): then the request's `model` picks one (the default for none or an unknown name), and
    it stays pinned while the request uses it."""

    def __init__(self, load: Callable[[], Embedder] | None = None, *, models: ModelManager | None = None,
                 max_batch_texts: int = 256) -> None:
        """`load` builds the embedder (blocking, slow; may raise a HomeportError such as a 503);
        it is called in the worker thread on first use, and again after a failure."""
        self._fixed = EmbeddingEngine(load, max_batch_texts=max_batch_texts) if load is not None else None
        self._models = models

    @classmethod
    def from_config(cls, config: EmbedderConfig, **kwargs) -> EmbeddingService:
        """The configured model (sentence-transformers or GGUF), loaded on first use."""
        return cls(lambda: load_embedder(config), **kwargs)

    @contextlib.asynccontextmanager
    async def _engine(self, name: str | None) -> AsyncIterator[EmbeddingEngine]:
        if self._models is None:
            assert self._fixed is not None
            yield self._fixed
            return
        async with self._models.using(name, "embedding") as model:
            yield model.engine

    # ---- the OpenAI endpoint -------------------------------------------------------------------

    async def create(self, body: EmbeddingRequest) -> dict:
        inputs = _inputs(body.input)
        async with self._engine(body.model) as engine:
            embedder = await engine.embedder()
            if body.dimensions is not None and body.dimensions > embedder.dimensions:
                raise InvalidRequestError(
                    f"dimensions must be at most {embedder.dimensions} for the model '{embedder.model_id}', "
                    f"got {body.dimensions}",
                    param="dimensions",
                )
            _check_token_ids(inputs, embedder.vocab_size)
            result = Embedded(*await engine.embed(inputs))
        data = []
        for index, vector in enumerate(result.vectors):
            if body.dimensions is not None and body.dimensions < len(vector):
                vector = _unit(vector[: body.dimensions])
            data.append({"object": "embedding", "index": index, "embedding": _encode(vector, body.encoding_format)})
        return {
            "object": "list",
            "data": data,
            "model": result.model_id,
            "usage": {"prompt_tokens": result.total_tokens, "total_tokens": result.total_tokens},
        }

    # ---- for moderations and rerank, and the batching behind them ----------------------------------

    async def embedder(self, name: str | None = None) -> Embedder:
        """The embedder (the default one unless `name`), loaded on first use."""
        async with self._engine(name) as engine:
            return await engine.embedder()

    async def embed(self, inputs: Sequence[Text], name: str | None = None) -> Embedded:
        """Embed texts (or token-id lists) in the next batch; unit vectors, in order."""
        async with self._engine(name) as engine:
            return Embedded(*await engine.embed(inputs))

    def stats(self) -> dict:
        """Counters of the fixed embedder: batches run and texts embedded (no text)."""
        return self._fixed.counters() if self._fixed is not None else {}

    def close(self) -> None:
        if self._fixed is not None:  # the manager's models close with the manager
            self._fixed.close_now()


def _inputs(value: str | list) -> list[Text]:
    """OpenAI's four input shapes as a list of texts or token-id lists; empty input is a 400."""
    if isinstance(value, str):
        items: list[Text] = [value]
    elif value and all(isinstance(item, int) for item in value):
        items = [list(value)]  # one input given as token ids
    else:
        items = list(value)
    if not items:
        raise InvalidRequestError("'input' must not be an empty list.", param="input", code="empty_input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequestError(f"'input' may hold at most {MAX_INPUTS} items, got {len(items)}.", param="input")
    for index, item in enumerate(items):
        if len(item) == 0:
            what = "an empty string" if isinstance(item, str) else "an empty list of token ids"
            where = "'input'" if isinstance(value, str) else f"'input[{index}]'"
            raise InvalidRequestError(f"{where} is {what}; it cannot be embedded.", param="input", code="empty_input")
    return items


def _check_token_ids(inputs: Sequence[Text], vocab_size: int) -> None:
    for item in inputs:
        if isinstance(item, list):
            for token in item:
                if not 0 <= token < vocab_size:
                    raise InvalidRequestError(
                        f"'input' holds token id {token}, outside the embedding model's vocabulary "
                        f"(0..{vocab_size - 1}); token ids are read as the embedding model's own",
                        param="input",
                    )


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return float32([v / norm for v in vector]) if norm > 0.0 else float32(vector)


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "float":
        return vector
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()  # OpenAI's base64 is little-endian float32
    return base64.b64encode(packed.tobytes()).decode("ascii")
