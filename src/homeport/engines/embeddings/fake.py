"""A deterministic hashing embedder for fast tests of the layers above engines.

Tokens are UTF-8 bytes (so `count_tokens` is the byte length and `detokenize` decodes bytes).
Each lowercase word is hashed (blake2b, stable across processes) to a signed unit bump in one
dimension, so texts sharing words are closer than texts that share none. It can be told to go
slowly or to fail, and it records the size of every batch it embedded, so batching is testable.
"""

from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections.abc import Sequence

from homeport.errors import EngineError

_WORD = re.compile(r"\w+")


class FakeEmbedder:
    vocab_size = 256

    def __init__(
        self,
        *,
        model_id: str = "fake-embedder",
        dimensions: int = 64,
        max_tokens: int = 512,
        delay: float = 0.0,
        fail: bool = False,
    ) -> None:
        self.model_id = model_id
        self.dimensions = dimensions
        self.max_tokens = max_tokens
        self.delay = delay  # seconds each `embed` call takes
        self.fail = fail
        self.batches: list[int] = []  # texts per `embed` call, in call order
        self._lock = threading.Lock()

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [min(len(text.encode("utf-8")), self.max_tokens) for text in texts]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        with self._lock:
            self.batches.append(len(texts))
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise EngineError("the fake embedder was told to fail")
        return [self._vector(text) for text in texts]

    def _vector(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        truncated = text.encode("utf-8")[: self.max_tokens].decode("utf-8", errors="ignore")
        for word in _WORD.findall(truncated.lower()):
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % self.dimensions
            vector[index] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(v * v for v in vector))
        if norm == 0.0:  # no words: a fixed unit vector, so every output stays normalized
            vector[0] = 1.0
            return vector
        return [v / norm for v in vector]
