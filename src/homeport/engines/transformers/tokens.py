"""The tokenizer side of a Hugging Face model: text ↔ ids, and the exact bytes of every token.

Token bytes come from a table built once at load: byte-level BPE pieces map back through the
GPT-2 byte alphabet, SentencePiece pieces turn ▁ into a space and <0xNN> into that byte, and added
tokens are their own text. A character split across tokens is then reassembled by
`IncrementalUtf8` instead of turning into U+FFFD. The engine thread only reads this table; the
tokenizer itself is used from the callers' threads.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


class Tokens:
    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self._tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._backend = backend
        self._literal = None
        self._lock = threading.Lock()  # for tokenizers without a Rust backend (not thread-safe)
        if backend is not None:
            # A second copy that reads special tokens' text as plain text: switching the flag on
            # the shared one would race with other threads encoding.
            from tokenizers import Tokenizer

            self._literal = Tokenizer.from_str(backend.to_str())
            self._literal.encode_special_tokens = True
        self.plain, self.rendered = _piece_tables(tokenizer, backend, vocab_size)

    def encode(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        if self._backend is not None:
            backend = self._backend if parse_special else self._literal
            return list(backend.encode(text, add_special_tokens=add_special).ids)
        with self._lock:
            return list(
                self._tokenizer.encode(text, add_special_tokens=add_special, split_special_tokens=not parse_special)
            )

    def decode(self, tokens: Sequence[int]) -> str:
        ids = [t for t in tokens if 0 <= t < self.vocab_size]
        if self._backend is not None:
            return self._backend.decode(ids, skip_special_tokens=True)
        with self._lock:
            return self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def piece(self, token: int, *, render_special: bool = False) -> bytes:
        if not 0 <= token < self.vocab_size:
            return b""
        return (self.rendered if render_special else self.plain)[token]


def _piece_tables(tokenizer: Any, backend: Any, vocab_size: int) -> tuple[list[bytes], list[bytes]]:
    """(pieces with special tokens empty, pieces with special tokens as their text)."""
    byte_level = _decoder_kind(backend) == "byte_level"
    byte_of = _byte_decoder() if byte_level else {}
    added = dict(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    special_ids = set(getattr(tokenizer, "all_special_ids", ()) or ())
    strings = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    plain: list[bytes] = []
    rendered: list[bytes] = []
    for token, text in enumerate(strings):
        if token in added or token in special_ids:
            entry = added.get(token)
            content = (entry.content if entry is not None else text or "").encode("utf-8")
            special = token in special_ids or bool(getattr(entry, "special", False))
            plain.append(b"" if special else content)
            rendered.append(content)
            continue
        if text is None:
            piece = b""
        elif byte_level:
            piece = bytes(byte_of[c] for c in text) if all(c in byte_of for c in text) else text.encode("utf-8")
        elif match := _BYTE_TOKEN.match(text):
            piece = bytes([int(match[1], 16)])
        else:
            piece = text.replace("\u2581", " ").encode("utf-8")
        plain.append(piece)
        rendered.append(piece)
    return plain, rendered


def _decoder_kind(backend: Any) -> str:
    if backend is None or backend.decoder is None:
        return "other"
    try:
        state = json.loads(backend.decoder.__getstate__())
    except Exception:  # an unfamiliar decoder object: treat its pieces as plain text
        return "other"
    return "byte_level" if '"ByteLevel"' in json.dumps(state) else "other"


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable stand-in character → the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}
