"""Relevance scores from a sentence-transformers / Hugging Face cross-encoder folder (for /v1/rerank),
on CPU or CUDA, fully offline.

A cross-encoder reads the query and the document together, so it ranks far better than comparing
two separately computed embeddings. Scores are what `CrossEncoder.predict` returns, as vLLM does:
the model's logit through the activation its folder configures, the sigmoid (a value in [0, 1])
unless the folder says otherwise (ms-marco models ask for the raw logit, which llama.cpp's server
always gives; the order is the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from homeport.engines.embeddings.base import EmbedderUnavailableError
from homeport.engines.embeddings.sentence_transformers import load_local


class CrossEncoderReranker:
    def __init__(self, path: Path, *, model_id: str, device: str = "cpu", batch_size: int = 32) -> None:
        self._model, device = load_local("CrossEncoder", path, device=device, needed_for="Reranking needs",
                                         what=f"rerank model {model_id!r}")
        if self._model.num_labels != 1:
            raise EmbedderUnavailableError(
                f"The rerank model {model_id!r} gives {self._model.num_labels} scores per pair; a reranker gives one"
            )
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        self.max_tokens = int(self._model.max_seq_length)
        self._tokenizer = self._model.tokenizer

    def count_tokens(self, pairs: Sequence[tuple[str, str]]) -> list[int]:
        if not pairs:
            return []
        queries, documents = zip(*pairs)
        encoded = self._tokenizer(list(queries), list(documents), truncation=True, max_length=self.max_tokens)
        return [len(ids) for ids in encoded["input_ids"]]

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        scores = self._model.predict(
            [list(pair) for pair in pairs],
            batch_size=self.batch_size,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return [float(score) for score in scores.reshape(-1)]
