"""The embedding engine protocols: texts in, unit vectors out (`Embedder`); (query, document) pairs
in, relevance scores out (`Reranker`). No HTTP, no OpenAI, no schemas.

Every method is blocking: callers run them in a worker thread, never on the event loop. An
embedder is not assumed to be thread-safe (tokenizers and llama.cpp contexts are not), so a
service drives each embedder from one thread at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from homeport.errors import ServiceUnavailableError


@runtime_checkable
class Embedder(Protocol):
    model_id: str  # the name responses report
    dimensions: int  # length of every vector `embed` returns
    max_tokens: int  # longer inputs are truncated to this many tokens before embedding
    vocab_size: int  # token ids accepted by `detokenize` are 0 .. vocab_size - 1

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens the model embeds for each text (special tokens included, after truncation)."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One L2-normalized vector of `dimensions` floats per text, in order."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of token ids from this model's own vocabulary (for token-id input)."""
        ...


class EmbedderUnavailableError(ServiceUnavailableError):
    """The embedder cannot be loaded as configured (missing package, missing model, bad device).

    A 503: the server runs fine without embeddings. The message is safe to show a client: it
    names what to install or configure, nothing internal.
    """

    code = "embeddings_unavailable"


@runtime_checkable
class Reranker(Protocol):
    """A cross-encoder: reads a query and a document together and scores how well they match."""

    model_id: str  # the name responses report
    max_tokens: int  # longer (query, document) pairs are truncated to this many tokens

    def count_tokens(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        """Tokens the model reads for each pair (special tokens included, after truncation)."""
        ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One relevance score per (query, document) pair, in order; higher is more relevant."""
        ...
