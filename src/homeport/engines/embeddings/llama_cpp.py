"""Embeddings from a GGUF model through llama.cpp (llama-cpp-python's `Llama(embedding=True)`).

Dedicated embedding models (nomic-embed, bge, e5, gte, MiniLM … in GGUF) carry their pooling type
in the file and are embedded several texts per llama.cpp batch; a model without one (a plain LLM)
gets per-token outputs, which are mean-pooled here, one text per call. The whole input must fit one
physical batch for non-causal models, so the batch equals the context, and longer inputs are
truncated to it. The context never exceeds the model's trained one: a BERT's position table has
exactly that many rows, and a longer input would index past it (llama.cpp aborts the process).
Blocking: call from one worker thread at a time.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Sequence
from pathlib import Path

from homeport.engines.embeddings.base import EmbedderUnavailableError

_POOLING_NONE = 0  # llama_cpp.LLAMA_POOLING_TYPE_NONE, without importing llama_cpp at import time


class LlamaCppEmbedder:
    def __init__(
        self,
        path: Path,
        *,
        model_id: str,
        n_ctx: int = 2048,
        n_gpu_layers: int = 0,
        n_threads: int | None = None,
    ) -> None:
        from llama_cpp import Llama

        n_ctx = min(n_ctx, _trained_context(path) or n_ctx)
        try:
            self._llm = Llama(
                model_path=str(path),
                embedding=True,
                n_ctx=n_ctx,
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_gpu_layers=n_gpu_layers,
                n_threads=n_threads,
                verbose=False,
            )
        except (ValueError, OSError, RuntimeError) as exc:
            raise EmbedderUnavailableError(
                f"The GGUF embedding model {model_id!r} could not be loaded ({type(exc).__name__})"
            ) from exc
        self.model_id = model_id
        self.dimensions = int(self._llm.n_embd())
        self.max_tokens = int(self._llm.n_batch)
        self.vocab_size = int(self._llm.n_vocab())

    def _tokens(self, text: str) -> list[int]:
        # The same tokenization `Llama.embed` uses (BOS, and for BERT vocabularies CLS/SEP).
        return self._llm.tokenize(text.encode("utf-8"))[: self.max_tokens]

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self._tokens(text)) for text in texts]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if self._llm.pooling_type() == _POOLING_NONE:
            # llama-cpp-python (0.3.x) reads per-token outputs of the 2nd and later sequences of a
            # batch from the wrong offset, so unpooled models embed one text per call.
            outputs = [self._llm.embed(text, normalize=False, truncate=True) for text in texts]
        else:
            outputs = self._llm.embed(list(texts), normalize=False, truncate=True)
        return [_normalized(_pooled(output)) for output in outputs]


def _trained_context(path: Path) -> int | None:
    """`<arch>.context_length` from the file's metadata (a vocab-only load, cheap), or None."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # which leaves the model's hparams unread: ask the metadata instead
    with suppress_stdout_stderr(disable=False):
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        return None  # the full load reports the problem
    try:
        arch = _meta(llama_cpp, model, b"general.architecture")
        trained = _meta(llama_cpp, model, arch.encode() + b".context_length") if arch else None
    finally:
        llama_cpp.llama_model_free(model)
    return int(trained) if trained and trained.isdigit() and int(trained) > 0 else None


def _meta(llama_cpp, model, key: bytes) -> str | None:
    buffer = ctypes.create_string_buffer(256)
    if llama_cpp.llama_model_meta_val_str(model, key, buffer, len(buffer)) < 0:
        return None
    return buffer.value.decode("utf-8", errors="replace")


def _pooled(output: list) -> list[float]:
    """A sequence vector as is; per-token vectors (pooling type none) averaged."""
    if output and isinstance(output[0], list):
        count = len(output)
        return [sum(column) / count for column in zip(*output)]
    return list(output)


def _normalized(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0 or not math.isfinite(norm):
        raise ValueError("llama.cpp returned an embedding that cannot be normalized")
    return [v / norm for v in vector]
